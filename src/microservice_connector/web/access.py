"""Who may call what: the bearer tokens each kind of request accepts (the guard enforces it)."""

from __future__ import annotations

from dataclasses import dataclass

from microservice_connector.settings import Settings

MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# Probes must answer without credentials: orchestrators and load balancers hold none.
ALWAYS_OPEN = frozenset({"/healthz", "/readyz"})
METRICS_PATH = "/metrics"


@dataclass(frozen=True)
class Need:
    """What a guarded request must carry: one of `tokens`, which the settings `names` hold."""

    tokens: tuple[str, ...]
    names: str


@dataclass(frozen=True)
class AccessTokens:
    """The tokens a service accepts; a kind of request whose token is None stays open.

    `write` (`MSC_API_TOKEN`) guards commands and opens everything; `read`
    (`MSC_READ_TOKEN`) guards every other route except the probes and `public_prefixes`;
    `metrics` (`MSC_METRICS_TOKEN`) guards `/metrics` alone.
    """

    write: str | None = None
    read: str | None = None
    metrics: str | None = None
    public_prefixes: tuple[str, ...] = ()  # e.g. the UI's own assets, `("/ui",)`

    def any_set(self) -> bool:
        """Whether any request needs a token at all."""
        return any(token is not None for token in (self.write, self.read, self.metrics))

    def need(self, method: str, path: str) -> Need | None:
        """What `method path` must carry, or None when it is open."""
        if method in MUTATING:
            return _need((self.write, "MSC_API_TOKEN"))
        if path in ALWAYS_OPEN or self._public(path):
            return None
        if path == METRICS_PATH:
            return _need((self.metrics, "MSC_METRICS_TOKEN"), (self.write, "MSC_API_TOKEN"))
        return _need((self.read, "MSC_READ_TOKEN"), (self.write, "MSC_API_TOKEN"))

    def _public(self, path: str) -> bool:
        return any(path == p or path.startswith(f"{p}/") for p in self.public_prefixes)


def _need(own: tuple[str | None, str], *also: tuple[str | None, str]) -> Need | None:
    """Guarded by `own` when it is set (`also` then opens it too); open otherwise."""
    if own[0] is None:
        return None
    accepted = [(token, name) for token, name in (own, *also) if token is not None]
    return Need(tuple(t for t, _ in accepted), " or ".join(n for _, n in accepted))


def access_tokens(settings: Settings, public_prefixes: tuple[str, ...] = ()) -> AccessTokens:
    """The tokens `settings` sets, with the paths a service keeps public."""
    return AccessTokens(
        write=settings.api_token_value(),
        read=settings.read_token_value(),
        metrics=settings.metrics_token_value(),
        public_prefixes=public_prefixes,
    )


def read_headers(settings: Settings) -> dict[str, str]:
    """The headers a client sends on a read of either service (`Settings.client_read_token`):
    `{"Authorization": "Bearer <token>"}`, or none when reads are open."""
    token = settings.client_read_token()
    return {"Authorization": f"Bearer {token}"} if token else {}
