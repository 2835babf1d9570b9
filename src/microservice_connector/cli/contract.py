"""`msc asyncapi`: print the published event contract."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from microservice_connector.cli.common import fail


def asyncapi(
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write it to this file, not stdout.")
    ] = None,
) -> None:
    """Print the AsyncAPI 3.0 document of the events on the broker (what the cart service
    serves at /asyncapi.json), generated from the event registries."""
    from microservice_connector.events.asyncapi import asyncapi_document

    text = json.dumps(asyncapi_document(), indent=2) + "\n"
    if output is None:
        typer.echo(text, nl=False)
    else:
        try:
            output.write_text(text)
        except OSError as exc:
            fail(f"cannot write {output}: {exc.strerror or exc}", 2)
