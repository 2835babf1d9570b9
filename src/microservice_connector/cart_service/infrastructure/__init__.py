"""The cart service's adapters: its HTTP API."""
