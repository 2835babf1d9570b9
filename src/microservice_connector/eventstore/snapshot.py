"""Snapshots: an aggregate's state as of one version, so loading it need not replay everything."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The state of `aggregate_id` right after its `version`-th event, encoded in `state` in
    the aggregate's snapshot shape number `schema_version`."""

    aggregate_id: str
    aggregate_type: str
    version: int
    state: bytes
    schema_version: int
    taken_at: datetime


class SnapshotStore(Protocol):
    """At most one snapshot per aggregate, thread-safe; a snapshot only ever saves time, so
    losing one loses nothing."""

    def load_snapshot(self, aggregate_id: str) -> Snapshot | None:
        """The aggregate's stored snapshot, or None."""
        ...

    def save_snapshot(self, snapshot: Snapshot) -> None:
        """Store `snapshot` unless one of a later version in the same shape is already there."""
        ...

    def save_snapshots(self, taken: Sequence[Snapshot]) -> None:
        """Save each of `taken` as `save_snapshot` does, together; a power cut may lose them."""
        ...

    def delete_snapshots(self) -> int:
        """Delete every snapshot; how many there were."""
        ...


class InMemorySnapshotStore:
    """Snapshots in a dict behind a lock; the same promises as `SnapshotStore`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._snapshots: dict[str, Snapshot] = {}

    def load_snapshot(self, aggregate_id: str) -> Snapshot | None:
        """The stored snapshot, or None."""
        with self._lock:
            return self._snapshots.get(aggregate_id)

    def save_snapshot(self, snapshot: Snapshot) -> None:
        """Keep the later snapshot; one in another shape is always replaced."""
        with self._lock:
            stored = self._snapshots.get(snapshot.aggregate_id)
            if supersedes(snapshot, stored):
                self._snapshots[snapshot.aggregate_id] = snapshot

    def save_snapshots(self, taken: Sequence[Snapshot]) -> None:
        """`save_snapshot` each of them, in order."""
        for snapshot in taken:
            self.save_snapshot(snapshot)

    def delete_snapshots(self) -> int:
        """Forget them all."""
        with self._lock:
            count = len(self._snapshots)
            self._snapshots.clear()
            return count


def supersedes(new: Snapshot, stored: Snapshot | None) -> bool:
    """Whether `new` should replace `stored`: it is later, or `stored` is in another shape."""
    return (
        stored is None
        or stored.schema_version != new.schema_version
        or stored.version < new.version
    )
