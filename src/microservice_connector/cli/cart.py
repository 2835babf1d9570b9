"""`msc cart`: send commands to a running cart service over HTTP."""

from __future__ import annotations

from typing import Annotated, Any

import httpx
import typer
from rich.table import Table

from microservice_connector.cli.common import console, fail, load_settings

cart_app = typer.Typer(
    help="Talk to a running cart service (MSC_CART_URL, default http://127.0.0.1:8080).",
    no_args_is_help=True,
)

UrlOption = Annotated[str | None, typer.Option("--url", help="Cart service URL [env MSC_CART_URL]")]


@cart_app.command("add")
def add(
    cart_id: str, item_id: str, quantity: Annotated[int, typer.Argument()], url: UrlOption = None
) -> None:
    """Add QUANTITY of ITEM_ID to CART_ID."""
    _show(
        _call(
            "POST", f"/carts/{cart_id}/items", url, json={"item_id": item_id, "quantity": quantity}
        )
    )


@cart_app.command("remove")
def remove(
    cart_id: str,
    item_id: str,
    quantity: Annotated[
        int | None, typer.Option(help="How many to remove; all of the item when omitted.")
    ] = None,
    url: UrlOption = None,
) -> None:
    """Remove ITEM_ID from CART_ID."""
    params = {} if quantity is None else {"quantity": quantity}
    _show(_call("DELETE", f"/carts/{cart_id}/items/{item_id}", url, params=params))


@cart_app.command("checkout")
def checkout(cart_id: str, url: UrlOption = None) -> None:
    """Check CART_ID out; it accepts no change afterwards."""
    _show(_call("POST", f"/carts/{cart_id}/checkout", url))


@cart_app.command("show")
def show(
    cart_id: str,
    version: Annotated[int | None, typer.Option(min=1, help="Show it as it was then.")] = None,
    url: UrlOption = None,
) -> None:
    """Show CART_ID now, or at --version N."""
    params = {} if version is None else {"version": version}
    _show(_call("GET", f"/carts/{cart_id}", url, params=params))


def _call(method: str, path: str, url: str | None, **kwargs: Any) -> dict[str, Any]:
    base = url or load_settings().cart_url
    try:
        response = httpx.request(method, base.rstrip("/") + path, timeout=10.0, **kwargs)
    except httpx.HTTPError as exc:
        fail(f"cannot reach the cart service at {base} ({exc}); is `msc cart-service` running?")
    try:
        body: dict[str, Any] = response.json()
    except ValueError:
        fail(f"{response.status_code} from {base}: {response.text[:200]}")
    if response.status_code != 200:
        fail(f"{response.status_code}: {body.get('detail', body)}")
    return body


def _show(cart: dict[str, Any]) -> None:
    console.print(f"cart [bold]{cart['cart_id']}[/] · version {cart['version']} · {cart['status']}")
    table = Table()
    table.add_column("item")
    table.add_column("quantity", justify="right")
    for item_id, quantity in sorted(cart["items"].items()):
        table.add_row(item_id, str(quantity))
    console.print(table)
