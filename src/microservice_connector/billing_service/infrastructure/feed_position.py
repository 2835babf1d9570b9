"""How far billing has followed the cart store's global feed: one row per feed, written in
the same transaction as the bills the feed's events changed, so a crash loses neither."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from sqlalchemy import BigInteger, Column, Connection, DateTime, String, Table, insert, select
from sqlalchemy import update as sql_update

from microservice_connector.billing_service.infrastructure.tables import metadata

if TYPE_CHECKING:  # it imports this module, for `save_position`
    from microservice_connector.billing_service.infrastructure.sql_repository import (
        SqlBillingRepository,
    )

CART_FEED = "cart.events"

feed_positions = Table(
    "feed_positions",
    metadata,
    Column("feed", String(64), primary_key=True),
    Column("position", BigInteger, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)


def read_position(connection: Connection, feed: str = CART_FEED) -> int:
    """The last position of `feed` that billing has handled; 0 before the first."""
    found = connection.execute(
        select(feed_positions.c.position).where(feed_positions.c.feed == feed)
    ).scalar_one_or_none()
    return int(found or 0)


def saved_position(repository: SqlBillingRepository) -> int:
    """The cart feed's last position billing handled, as committed (0 before the first)."""
    return repository.feed_position()


def save_position(connection: Connection, position: int, feed: str = CART_FEED) -> None:
    """Move `feed`'s position forward to `position` (never back: instances may race, and a
    position behind only costs re-reading duplicates)."""
    now = datetime.now(UTC)
    current = connection.execute(
        select(feed_positions.c.position).where(feed_positions.c.feed == feed)
    ).scalar_one_or_none()
    if current is None:  # two instances inserting at once: IntegrityError, a race retried
        connection.execute(
            insert(feed_positions).values(feed=feed, position=position, updated_at=now)
        )
    elif position > current:
        connection.execute(
            sql_update(feed_positions)
            .where(feed_positions.c.feed == feed)
            .values(position=position, updated_at=now)
        )
