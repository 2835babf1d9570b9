"""Billing's adapters: SQL read model, cart-event decoding, consumer, HTTP API."""
