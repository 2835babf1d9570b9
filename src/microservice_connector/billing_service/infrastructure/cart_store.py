"""Billing's reader of the truth: the cart service's read API (`GET /carts/{id}/events`,
`GET /events`), every answer checked against what was asked before billing uses it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx

from microservice_connector.billing_service.application import CartEventIn
from microservice_connector.billing_service.infrastructure.cart_messages import (
    FEED_FIELDS,
    PoisonMessage,
    feed_message,
    to_cart_event,
)
from microservice_connector.events.ids import path_segment
from microservice_connector.events.registry import EventRegistry
from microservice_connector.messaging.message import Message
from microservice_connector.settings import Settings
from microservice_connector.web.access import read_headers

READ_TIMEOUT_S = 10.0


class CartStoreUnreachable(Exception):
    """The cart service did not answer (or answered an error): nothing was learnt; try later."""


class BadStoreAnswer(Exception):
    """The cart service answered something that contradicts what was asked (another cart,
    versions out of order, an entry that is not a cart event): billing uses none of it."""


@dataclass(slots=True)
class FeedEntry:
    """One event of the global feed: its position, time, cart and version as the feed lists
    them; the message the relay published for it, and the decoded event or why it cannot be
    decoded (`problem`), are worked out when first asked for (catch-up passes most entries
    over on their cart and version alone)."""

    position: int
    timestamp: datetime
    cart_id: str
    version: int
    _item: Mapping[str, Any]
    _registry: EventRegistry
    _decoded: tuple[Message, CartEventIn | None, str | None] | None = None

    @property
    def message(self) -> Message:
        """The `cart.events` message the relay published for this event."""
        return self._decode()[0]

    @property
    def event(self) -> CartEventIn | None:
        """The decoded event, or None if billing cannot decode it."""
        return self._decode()[1]

    @property
    def problem(self) -> str | None:
        """Why the event cannot be decoded, or None."""
        return self._decode()[2]

    def _decode(self) -> tuple[Message, CartEventIn | None, str | None]:
        if self._decoded is None:
            message = feed_message(self._item)
            try:
                self._decoded = (
                    message,
                    to_cart_event(message, self._registry, self.position),
                    None,
                )
            except PoisonMessage as exc:
                self._decoded = (message, None, str(exc))
        return self._decoded


@dataclass(frozen=True, slots=True)
class FeedPage:
    """A page of the global feed, by position; ask for `next_after` next."""

    entries: list[FeedEntry]
    next_after: int


class CartStore:
    """The cart service's stored events as billing may trust them: each answer is checked
    (cart, versions, event ids, types) or refused with `BadStoreAnswer`."""

    def __init__(self, http: httpx.AsyncClient, registry: EventRegistry) -> None:
        self._http = http
        self._registry = registry

    @classmethod
    def open(cls, settings: Settings, registry: EventRegistry) -> CartStore:
        """A reader of `settings.cart_store()`, with the headers `read_headers` chooses."""
        http = httpx.AsyncClient(
            base_url=settings.cart_store(),
            headers=read_headers(settings),
            timeout=READ_TIMEOUT_S,
        )
        return cls(http, registry)

    async def close(self) -> None:
        """Release the connections."""
        await self._http.aclose()

    async def events_after(self, cart_id: str, after_version: int) -> list[CartEventIn]:
        """The cart's stored events with a version above `after_version`, oldest first and
        contiguous from `after_version + 1`; empty when the store has none (or no such cart)."""
        body = await self._get(
            f"/carts/{path_segment(cart_id)}/events",
            {"after_version": after_version},
            absent=cart_id,
        )
        if body is None:
            return []
        events: list[CartEventIn] = []
        for expected, item in enumerate(_items(body), start=after_version + 1):
            event = self._decode(item)
            if event.cart_id != cart_id or event.version != expected:
                raise BadStoreAnswer(
                    f"asked for cart {cart_id} after version {after_version}, got cart "
                    f"{event.cart_id} version {event.version} where version {expected} belonged"
                )
            events.append(event)
        if len({event.event_id for event in events}) != len(events):
            raise BadStoreAnswer(f"cart {cart_id}: the store answered one event id twice")
        return events

    async def feed(self, after: int, limit: int) -> FeedPage:
        """Up to `limit` events of every cart after position `after`; an entry billing cannot
        decode is kept, with its `problem`, so that it can be dead-lettered."""
        body = await self._get("/events", {"after": after, "limit": limit})
        entries: list[FeedEntry] = []
        last = after
        for item in _items(body):
            try:
                position = int(item["position"])
                timestamp = _utc(datetime.fromisoformat(str(item["timestamp"])))
                cart_id, version = str(item["aggregate_id"]), int(item["version"])
                if not item.keys() >= FEED_FIELDS:
                    raise KeyError(", ".join(sorted(FEED_FIELDS - item.keys())))
            except (KeyError, TypeError, ValueError) as exc:
                raise BadStoreAnswer(f"a feed entry after position {last} is malformed") from exc
            if position <= last:
                raise BadStoreAnswer(f"the feed went back from position {last} to {position}")
            last = position
            entries.append(FeedEntry(position, timestamp, cart_id, version, item, self._registry))
        return FeedPage(entries, last)

    def _decode(self, item: Mapping[str, Any]) -> CartEventIn:
        try:
            return to_cart_event(feed_message(item), self._registry, int(item["position"]))
        except (KeyError, TypeError, ValueError) as exc:  # PoisonMessage is a ValueError
            raise BadStoreAnswer(f"a stored event billing cannot read: {exc}") from exc

    async def _get(self, path: str, params: Mapping[str, int], absent: str | None = None) -> Any:
        """The JSON body; None on a 404 whose detail names `absent` (the cart service saying
        it has no such cart); `CartStoreUnreachable` on anything else, so that a wrong
        `MSC_CART_URL` (another server's 404) is never taken for a store that lacks a cart."""
        try:
            response = await self._http.get(path, params=dict(params))
        except httpx.HTTPError as exc:
            raise CartStoreUnreachable(
                f"cart service at {self._http.base_url} did not answer: {exc!r}"
            ) from exc
        # The cart API's `CartNotFound`, word for word: any other 404 is a wrong URL.
        if response.status_code == 404 and _detail(response) == f"cart {absent} not found":
            return None
        if response.status_code != 200:
            raise CartStoreUnreachable(
                f"GET {path} answered {response.status_code}: {response.text[:200]}"
            )
        try:
            return response.json()
        except ValueError as exc:
            raise BadStoreAnswer(f"GET {path} answered something that is not JSON") from exc


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return ""
    detail = body.get("detail") if isinstance(body, dict) else None
    return detail if isinstance(detail, str) else ""


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def _items(body: Any) -> list[Mapping[str, Any]]:
    events = body.get("events") if isinstance(body, dict) else None
    if not isinstance(events, list) or not all(isinstance(item, dict) for item in events):
        raise BadStoreAnswer("the answer has no list of events")
    return events
