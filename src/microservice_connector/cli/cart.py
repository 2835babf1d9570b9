"""`msc cart`: send commands to a running cart service over HTTP.

Each command carries a fresh `Idempotency-Key`, so it is retried safely, with the same key,
when the connection fails or the service answers 503 (or 409 with `Retry-After`: the first
attempt is still running): it is applied once however often it was sent.
"""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Any, cast

import httpx
import typer
from rich.table import Table

from microservice_connector.cli.common import console, errors, fail, load_settings
from microservice_connector.events.ids import ID_DESCRIPTION, is_valid_id, path_segment
from microservice_connector.settings import Settings
from microservice_connector.web.access import read_headers

cart_app = typer.Typer(
    help="Talk to a running cart service (MSC_CART_URL, default http://127.0.0.1:8080). "
    "Each command carries a fresh Idempotency-Key and is resent with it after a connection "
    "error or a 503, so it is applied once.",
    no_args_is_help=True,
)

UrlOption = Annotated[str | None, typer.Option("--url", help="Cart service URL (env MSC_CART_URL)")]
ATTEMPTS = 6
FIRST_BACKOFF_S = 0.2
MAX_BACKOFF_S = 2.0


@cart_app.command("add")
def add(
    cart_id: str, item_id: str, quantity: Annotated[int, typer.Argument()], url: UrlOption = None
) -> None:
    """Add QUANTITY of ITEM_ID to CART_ID."""
    path = f"/carts/{_segment('cart', cart_id)}/items"
    _show(_call("POST", path, url, json={"item_id": _id("item", item_id), "quantity": quantity}))


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
    path = f"/carts/{_segment('cart', cart_id)}/items/{_segment('item', item_id)}"
    _show(_call("DELETE", path, url, params=params))


@cart_app.command("checkout")
def checkout(cart_id: str, url: UrlOption = None) -> None:
    """Check CART_ID out; it accepts no change afterwards."""
    _show(_call("POST", f"/carts/{_segment('cart', cart_id)}/checkout", url))


@cart_app.command("show")
def show(
    cart_id: str,
    version: Annotated[int | None, typer.Option(min=1, help="Show it as it was then.")] = None,
    url: UrlOption = None,
) -> None:
    """Show CART_ID now, or at --version N."""
    params = {} if version is None else {"version": version}
    _show(_call("GET", f"/carts/{_segment('cart', cart_id)}", url, params=params))


def _id(kind: str, value: str) -> str:
    """`value`, or a clear exit when the cart service would refuse it as an id."""
    if not is_valid_id(value):
        fail(f"{kind} id {value!r} is not an id ({ID_DESCRIPTION})", 2)
    return value


def _segment(kind: str, value: str) -> str:
    """`value`, an id, as one URL path segment (`path_segment`)."""
    return path_segment(_id(kind, value))


def send_with_retries(
    method: str, url: str, *, attempts: int = ATTEMPTS, **kwargs: Any
) -> httpx.Response:
    """Send the request, a command with a fresh `Idempotency-Key`; resend it with the same
    key after a connection failure, a 503, or a 409 with `Retry-After` (backing off), up
    to `attempts` times. Raises the last `httpx.TransportError` if every attempt failed so."""
    headers = dict(kwargs.pop("headers", {}))
    keyed = method in ("POST", "DELETE")
    if keyed:
        headers["Idempotency-Key"] = f'"{uuid.uuid4()}"'
    again = "with the same Idempotency-Key" if keyed else "(a read: safe to repeat)"
    backoff = FIRST_BACKOFF_S
    for _ in range(attempts - 1):
        try:
            response = httpx.request(method, url, headers=headers, timeout=10.0, **kwargs)
        except httpx.UnsupportedProtocol:
            raise  # not an http(s) URL: no retry can help
        except httpx.TransportError as exc:
            reason = f"{type(exc).__name__}: {exc}"
        else:
            if not _worth_retrying(response):
                return response
            reason = f"answered {response.status_code}"
        errors.print(f"retrying ({reason}) {again}", highlight=False)
        time.sleep(backoff)  # the client's back-off between attempts
        backoff = min(backoff * 2, MAX_BACKOFF_S)
    return httpx.request(method, url, headers=headers, timeout=10.0, **kwargs)


def _worth_retrying(response: httpx.Response) -> bool:
    """A 503, or a 409 with `Retry-After`: the key's first attempt is still running."""
    return response.status_code == 503 or (
        response.status_code == 409 and "retry-after" in response.headers
    )


def _call(method: str, path: str, url: str | None, **kwargs: Any) -> dict[str, Any]:
    settings = load_settings()
    base = url or settings.cart_url
    try:
        response = send_with_retries(
            method, base.rstrip("/") + path, headers=_auth(method, settings), **kwargs
        )
    except httpx.HTTPError as exc:
        fail(f"cannot reach the cart service at {base} ({exc}); is `msc cart-service` running?")
    try:
        body = response.json()
    except ValueError:
        fail(f"{response.status_code} from {base}: {response.text[:200]}")
    if response.status_code != 200:
        detail = body.get("detail", body) if isinstance(body, dict) else body
        fail(f"{response.status_code}: {detail}")
    if not _is_cart(body):
        fail(f"{base} answered 200 without a cart ({response.text[:200]}): is it the cart service?")
    return cast(dict[str, Any], body)


def _is_cart(body: object) -> bool:
    """Whether `body` has the shape of the API's cart (DESIGN §3.4)."""
    return (
        isinstance(body, dict)
        and {"cart_id", "version", "status", "items"} <= body.keys()
        and isinstance(body["items"], dict)
    )


def _auth(method: str, settings: Settings) -> dict[str, str]:
    """The token this request needs: the write token on a command, the read token on a read."""
    if method == "GET":
        return read_headers(settings)
    token = settings.api_token_value()
    return {"Authorization": f"Bearer {token}"} if token else {}


def _show(cart: dict[str, Any]) -> None:
    console.print(f"cart [bold]{cart['cart_id']}[/] · version {cart['version']} · {cart['status']}")
    table = Table()
    table.add_column("item")
    table.add_column("quantity", justify="right")
    for item_id, quantity in sorted(cart["items"].items()):
        table.add_row(item_id, str(quantity))
    console.print(table)
