"""`msc`: run the services and inspect their stores."""

from __future__ import annotations

from microservice_connector.cli.app import app, main

__all__ = ["app", "main"]
