"""The cart service: commands in, events out, state rebuilt from events."""
