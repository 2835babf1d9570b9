"""What the composition roots share: the broker link and background tasks."""
