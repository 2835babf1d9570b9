"""The global feed under parallel PostgreSQL writers (DESIGN §4, issue 15): writer processes
commit side by side, in whatever order their transactions end, while a reader pages through
`read_all` the whole time. The reader sees every event exactly once, in position order, and
leaves no gap behind, though transactions that took later positions often commit first."""

from __future__ import annotations

import itertools
import subprocess
import sys
import time
from collections.abc import Sequence

import pytest

from microservice_connector.events import RecordedEvent
from microservice_connector.eventstore import SqlEventStore
from microservice_connector.eventstore.schema import events

WRITERS = 4
APPENDS_PER_WRITER = 100
PAGE = 25
DEADLINE_S = 60

# Each writer appends batches of 1 to 4 events to its own carts and to carts all writers
# share, so that some transactions lose a race and roll back, leaving real gaps.
WRITER = """
import random, sys
from datetime import UTC, datetime
from microservice_connector.events import ItemAdded, NewEvent
from microservice_connector.eventstore import AppendRequest, ConcurrencyError, SqlEventStore

url, writer, appends = sys.argv[1], sys.argv[2], int(sys.argv[3])
store = SqlEventStore(url)
rng = random.Random(writer)
stored = 0
for n in range(appends):
    cart = f"shared-{rng.randrange(3)}" if rng.random() < 0.3 else f"{writer}-{rng.randrange(20)}"
    at = datetime.now(UTC)
    added = [
        NewEvent("ItemAdded", ItemAdded(cart, f"item-{n}-{k}", 1, at), at)
        for k in range(rng.randint(1, 4))
    ]
    try:
        request = AppendRequest(cart, "ShoppingCart", len(store.load(cart)), added)
        stored += len(store.append(request))
    except ConcurrencyError:
        pass
store.close()
print(stored)
"""


def strictly_increasing(numbers: Sequence[int]) -> bool:
    return all(a < b for a, b in itertools.pairwise(numbers))


@pytest.mark.postgres
def test_a_reader_paging_while_writers_commit_sees_every_event_once_in_order(
    postgres_url: str,
) -> None:
    reader = SqlEventStore(postgres_url)  # creates the schema before the writers start
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, postgres_url, f"w{n}", str(APPENDS_PER_WRITER)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(WRITERS)
    ]
    seen: list[RecordedEvent] = []
    try:
        deadline = time.monotonic() + DEADLINE_S
        while any(writer.poll() is None for writer in writers):
            assert time.monotonic() < deadline, "the writers did not finish in time"
            seen += reader.read_all(seen[-1].position if seen else 0, PAGE)
        outputs = [writer.communicate(timeout=DEADLINE_S) for writer in writers]
        assert all(writer.returncode == 0 for writer in writers), [err for _, err in outputs]
        stored = sum(int(out) for out, _ in outputs)
        while len(seen) < stored:  # the last commits may still be passing the horizon
            assert time.monotonic() < deadline, f"saw {len(seen)} of {stored} events"
            seen += reader.read_all(seen[-1].position if seen else 0, PAGE)
        with reader.writer.connect() as connection:
            committed = [row.event_id for row in connection.execute(events.select())]
    finally:
        for writer in writers:
            writer.kill()
        reader.close()

    positions = [event.position for event in seen]
    assert stored > WRITERS * APPENDS_PER_WRITER / 2  # most appends won their race
    assert strictly_increasing(positions), "the feed went back or repeated itself"
    assert len({event.event_id for event in seen}) == len(seen) == stored
    assert sorted(event.event_id for event in seen) == sorted(committed)
    assert max(positions) - min(positions) + 1 > len(seen), "no rolled-back gap was exercised"
