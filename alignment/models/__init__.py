"""alignment.models."""
