"""A JetStream cluster of real `nats-server` processes on loopback, for tests that kill nodes.

`NatsCluster(size=3, root=dir)` runs `size` nodes, each with its own client, route and
monitoring port and its own store folder under `root`. Every node keeps its ports and store
across `kill()` and `start()`, so a killed node comes back as the same peer and catches up.

    with NatsCluster(3, tmp_path) as cluster:
        urls = ",".join(cluster.urls)           # MSC_NATS_URL for a service
        leader = cluster.stream_leader("CART")  # once the stream exists
        cluster.nodes[leader].kill()
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import tempfile
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import httpx
import nats
from nats.js.api import StreamInfo
from nats.js.errors import NotFoundError

from support.nats import NatsServer, free_port

READY_TIMEOUT_S = 30.0
T = TypeVar("T")


class ClusterNode(NatsServer):
    """One cluster member: a `NatsServer` with a server name, routes and a monitoring port."""

    def __init__(
        self, name: str, store_dir: Path, *, cluster: str, route_port: int, routes: list[str]
    ) -> None:
        self.name = name
        self.route_port = route_port
        self.monitor_port = free_port()
        args = [
            "-n",
            name,
            "--cluster_name",
            cluster,
            "--cluster",
            f"nats://127.0.0.1:{route_port}",
            "--routes",
            ",".join(routes),
            "-m",
            str(self.monitor_port),
        ]
        super().__init__(store_dir, args=args)

    @property
    def client_url(self) -> str:
        """The URL clients connect to, `nats://127.0.0.1:<port>`."""
        return self.url

    def jetstream_state(self) -> dict[str, Any] | None:
        """This node's `/jsz` (JetStream and meta-cluster state), or None if it does not answer."""
        if not self.running:
            return None
        try:
            response = httpx.get(f"http://127.0.0.1:{self.monitor_port}/jsz", timeout=1.0)
        except httpx.HTTPError:
            return None
        body: dict[str, Any] = response.json() if response.status_code == 200 else {}
        return body or None

    def client_names(self) -> list[str]:
        """The names of the clients connected to this node now (`/connz`); [] if it is down."""
        if not self.running:
            return []
        try:
            response = httpx.get(f"http://127.0.0.1:{self.monitor_port}/connz", timeout=1.0)
        except httpx.HTTPError:
            return []
        connections = response.json().get("connections") or []
        return [str(connection.get("name") or "") for connection in connections]


class NatsCluster:
    """`size` JetStream nodes routed to one another, stores under `root` (a temporary folder
    if None); `wait_ready()` after (re)starts."""

    def __init__(self, size: int = 3, root: Path | None = None, *, name: str = "msc") -> None:
        if size < 1:
            raise ValueError(f"a cluster needs at least one node, not {size}")
        root = Path(tempfile.mkdtemp(prefix="msc-nats-cluster-")) if root is None else root
        route_ports = [free_port() for _ in range(size)]
        routes = [f"nats://127.0.0.1:{port}" for port in route_ports]
        self.nodes = [
            ClusterNode(
                f"{name}-{index}",
                root / f"node-{index}",
                cluster=name,
                route_port=port,
                routes=[route for route in routes if route != routes[index]],
            )
            for index, port in enumerate(route_ports)
        ]

    @property
    def urls(self) -> list[str]:
        """Every node's client URL, in node order."""
        return [node.client_url for node in self.nodes]

    def start(self) -> NatsCluster:
        """Start every node that is not running, then wait until the cluster is ready."""
        for node in self.nodes:
            node.start()
        self.wait_ready()
        return self

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> None:
        """Return once a JetStream meta leader is elected and sees every running node as a
        current peer; the cluster then accepts stream and consumer requests."""
        running = {node.name for node in self.nodes if node.running}
        if not running:
            raise AssertionError("no node of the cluster is running")

        def ready() -> bool | None:
            for node in self.nodes:
                meta = (node.jetstream_state() or {}).get("meta_cluster") or {}
                if meta.get("leader") != node.name:
                    continue
                current = {peer["name"] for peer in meta.get("replicas") or [] if peer["current"]}
                return running <= current | {node.name} or None
            return None

        _poll(ready, timeout, f"a JetStream meta leader seeing {sorted(running)}")

    def stream_leader(self, stream: str, timeout: float = READY_TIMEOUT_S) -> int:
        """The index in `nodes` of the node leading `stream`, once a leader is elected."""
        names = [node.name for node in self.nodes]

        def leader() -> int | None:
            info = self.stream_info(stream)
            name = info.cluster.leader if info is not None and info.cluster else None
            return names.index(name) if name in names else None

        return _poll(leader, timeout, f"a leader of stream {stream}")

    def stream_replicas(self, stream: str) -> int:
        """The replica count `stream` was created with."""
        info = self.stream_info(stream)
        if info is None:
            raise AssertionError(f"stream {stream} does not exist or no node answers")
        return info.config.num_replicas or 1

    def wait_stream_current(self, stream: str, timeout: float = READY_TIMEOUT_S) -> None:
        """Return once every running node holds `stream` and its followers are current (a
        restarted node has caught up)."""
        wanted = {node.name for node in self.nodes if node.running}

        def current() -> bool | None:
            info = self.stream_info(stream)
            if info is None or info.cluster is None or info.cluster.leader is None:
                return None
            caught_up = {peer.name for peer in info.cluster.replicas or [] if peer.current}
            return wanted <= caught_up | {info.cluster.leader} or None

        _poll(current, timeout, f"every replica of stream {stream} to be current")

    def move_stream_leader(self, stream: str, to: int, timeout: float = READY_TIMEOUT_S) -> None:
        """Make node `to` the leader of `stream` (a JetStream leader step-down naming it as
        the preferred successor); returns once it leads."""
        payload = json.dumps({"placement": {"preferred": self.nodes[to].name}}).encode()

        def moved() -> bool | None:
            if self.stream_leader(stream, timeout) == to:
                return True
            _in_thread(self._request(f"$JS.API.STREAM.LEADER.STEPDOWN.{stream}", payload))
            return None

        _poll(moved, timeout, f"node {to} to lead stream {stream}")

    def stream_info(self, stream: str) -> StreamInfo | None:
        """`stream`'s info from any node that answers; None if it is not there or none can tell."""
        return _in_thread(self._ask_stream_info(stream))

    async def _ask_stream_info(self, stream: str) -> StreamInfo | None:
        for node in self.nodes:
            if not node.running:
                continue
            try:
                client = await nats.connect(
                    node.client_url, connect_timeout=1, allow_reconnect=False
                )
            except Exception:
                continue
            try:
                return await client.jetstream(timeout=2).stream_info(stream)
            except NotFoundError:
                return None
            except Exception:
                continue  # no meta or stream leader right now: ask another node
            finally:
                await client.close()
        return None

    async def _request(self, subject: str, payload: bytes) -> None:
        url = next(node.client_url for node in self.nodes if node.running)
        client = await nats.connect(url, connect_timeout=1, allow_reconnect=False)
        try:
            with contextlib.suppress(Exception):  # a refused step-down is retried by the caller
                await client.request(subject, payload, timeout=2)
        finally:
            await client.close()

    def close(self) -> None:
        """Stop every node (their stores stay under `root`)."""
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> NatsCluster:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def _in_thread(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run `coroutine` on a loop of its own, so callers may be inside a running loop or not."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


def _poll(condition: Callable[[], T | None], timeout: float, what: str) -> T:
    """`condition()`'s first answer that is not None, polled until `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        outcome = condition()
        if outcome is not None:
            return outcome
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.05)
