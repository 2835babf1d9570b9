"""Messaging spans (OpenTelemetry semantic conventions): one `send <topic>` span per message
the relay publishes, whose context the message carries on, and one `process <topic>` span per
message a consumer handles."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from microservice_connector.messaging.message import Delivery, Message, PublishResult
from microservice_connector.messaging.settlement import BatchHandler, Reject, Retry, Settlement
from microservice_connector.tracing import context, setup


class PublishSpans:
    """The spans of one publish round; `messages` are the ones to publish (carrying each
    span's context), `end` closes them with the broker's answers. Inert while tracing is off."""

    def __init__(self, messages: list[Message]) -> None:
        self.messages = messages
        self._spans: list[Span] = []
        if not context.enabled():
            return
        traced: list[Message] = []
        for message in messages:
            started = _start(f"send {message.topic}", SpanKind.PRODUCER, message, "send")
            carrier: dict[str, str] = dict(message.headers)
            with trace.use_span(started, end_on_exit=False):
                context.W3C.inject(carrier)
            self._spans.append(started)
            traced.append(replace(message, headers=carrier))
        self.messages = traced

    def end(self, results: Sequence[PublishResult]) -> None:
        """Close every span, marking those the broker did not acknowledge as errors."""
        for started, result in zip(self._spans, results, strict=False):
            if not result.acknowledged:
                started.set_status(Status(StatusCode.ERROR, result.error or "not acknowledged"))
            started.end()


def publish_spans(messages: list[Message]) -> PublishSpans:
    """Start the `send` spans of `messages` (children of the context each one carries)."""
    return PublishSpans(messages)


def traced_consume(handler: BatchHandler) -> BatchHandler:
    """A consumer middleware: a `process <topic>` span per delivery, child of the context the
    message carries, open while the batch is handled. `handler` itself while tracing is off."""
    if not context.enabled():
        return handler

    async def wrapped(deliveries: Sequence[Delivery]) -> list[Settlement]:
        spans = [
            _start(f"process {d.message.topic}", SpanKind.CONSUMER, d.message, "process")
            for d in deliveries
        ]
        try:
            outcomes = await handler(deliveries)
        except BaseException as exc:
            for started in spans:
                started.record_exception(exc)
                started.end()
            raise
        for started, outcome in zip(spans, outcomes, strict=True):
            if isinstance(outcome, Reject) or (isinstance(outcome, Retry) and outcome.failure):
                started.set_status(Status(StatusCode.ERROR, outcome.reason))
            started.end()
        return outcomes

    return wrapped


def _start(name: str, kind: SpanKind, message: Message, operation: str) -> Span:
    parent = context.W3C.extract(dict(message.headers))
    return context.tracer.start_span(
        name,
        context=parent,
        kind=kind,
        attributes={
            "messaging.system": setup.messaging_system,
            "messaging.destination.name": message.topic,
            "messaging.operation.type": operation,
            "messaging.operation.name": operation,
            "messaging.message.id": message.id,
        },
    )
