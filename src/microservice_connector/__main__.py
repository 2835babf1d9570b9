"""`python -m microservice_connector` is `msc`."""

from __future__ import annotations

from microservice_connector.cli import main

main()
