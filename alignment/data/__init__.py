"""alignment.data."""
