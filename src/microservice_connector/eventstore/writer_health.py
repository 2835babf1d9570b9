"""What readiness needs to know about a group-commit writer: whether it stopped for good, and
whether its commits fail (a database that is down or a disk that is full) with no success since."""

from __future__ import annotations

import time

from microservice_connector.eventstore.errors import DatabaseUnavailable, WriterStopped


class WriterHealth:
    """Set by the writer thread, read from any thread (each field is replaced whole)."""

    def __init__(self) -> None:
        self._stopped: str | None = None
        self._failing: str | None = None
        self._failing_since = 0.0

    def committed(self) -> None:
        """A commit succeeded: the database takes writes again."""
        self._failing = None

    def commit_failed(self, reason: str) -> None:
        """A commit failed for a reason that may heal (`DatabaseUnavailable`)."""
        if self._failing is None:
            self._failing_since = time.monotonic()
        self._failing = reason

    def stop(self, reason: str) -> None:
        """The writer thread ended on an error; every later append is refused."""
        self._stopped = reason

    def refuse_if_stopped(self) -> None:
        """Raise `WriterStopped` if the writer has stopped."""
        if self._stopped is not None:
            raise WriterStopped(f"event store writer stopped: {self._stopped}; restart the service")

    def check(self) -> None:
        """Raise `DatabaseUnavailable` naming the writer unless it runs and its last commit
        (if any) succeeded."""
        self.refuse_if_stopped()
        failing = self._failing
        if failing is not None:
            ago = time.monotonic() - self._failing_since
            raise DatabaseUnavailable(
                f"event store writer: commits fail since {ago:.1f} s ago, none succeeded since:"
                f" {failing}"
            )
