"""Log output: readable lines by default, one JSON object per line with MSC_LOG_FORMAT=json."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Literal

EVENT_FIELDS = ("event_id", "aggregate_id", "correlation_id", "event_type", "version", "outcome")
TRACE_FIELDS = ("trace_id", "span_id")  # stamped by tracing's filter when tracing is on
LogFormat = Literal["text", "json"]


class InstanceFilter(logging.Filter):
    """Stamps every record with the instance that wrote it (`record.instance`)."""

    def __init__(self, instance: str) -> None:
        super().__init__()
        self.instance = instance

    def filter(self, record: logging.LogRecord) -> bool:
        """Always keeps the record."""
        record.instance = self.instance
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, instance, logger, message, and the event
    fields (`event_id`, `aggregate_id`, `correlation_id`, …) given as `extra`."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat().replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if "instance" in record.__dict__:
            entry["instance"] = record.__dict__["instance"]
        for name in (*EVENT_FIELDS, *TRACE_FIELDS):
            if name in record.__dict__:
                entry[name] = record.__dict__[name]
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(
    fmt: LogFormat = "text", level: int = logging.INFO, *, instance: str | None = None
) -> None:
    """Send logs to stderr in `fmt`, each line naming `instance` when given; uvicorn's own
    loggers follow the same format and level."""
    handler = logging.StreamHandler()
    if instance is not None:
        handler.addFilter(InstanceFilter(instance))
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        shown = " %(instance)s" if instance is not None else ""
        handler.setFormatter(
            logging.Formatter(f"%(asctime)s %(levelname)s{shown} %(name)s: %(message)s")
        )
    # No line shows the caller's file, thread or process: not looking them up for every
    # record saves a tenth of each event's log line (the logging docs' "Optimization").
    logging._srcfile = None
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
        logging.getLogger(name).setLevel(logging.NOTSET)  # a level set earlier must not linger
