"""alignment.training."""
