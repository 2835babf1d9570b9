"""Microservice Connector: an event-sourced cart, an event store with outbox, and billing."""

from __future__ import annotations

__version__ = "0.1.0"
