"""Clustered JetStream: three `nats-server` nodes routed together, streams and the billing
consumer with 3 replicas, both services given all three URLs.

Under HTTP load, each round moves the `CART` stream's leadership to the node a service is
connected to (the cart service's relay, then billing, in turn) and SIGKILLs that node: the
service must reconnect to another URL, and the stream must elect a new leader. Publishing
resumes after the election; the node comes back and catches up; at the end nothing is lost
and nothing is applied twice."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import nats
import pytest

from microservice_connector.messaging.nats.connection import ensure_stream
from support.nats_cluster import NatsCluster
from support.processes import wait_for
from support.reliability import Load, audit, audited, report, running_system

pytestmark = [pytest.mark.e2e, pytest.mark.nats]

CARTS = [f"cluster-{n}" for n in range(200)]
SERVICES = ("cart-service", "billing-service")  # the NATS client names the services use


@pytest.mark.reliability
def test_killing_the_stream_leader_under_load_loses_nothing(tmp_path: Path) -> None:
    rounds = 4
    resumed_s: list[float] = []
    with (
        NatsCluster(3, tmp_path / "cluster") as cluster,
        running_system(tmp_path, cluster=cluster) as system,
        Load(system.cart.url, CARTS, clients=4) as load,
    ):
        load.wait_for_answers(200, 50)
        assert cluster.stream_replicas("CART") == 3
        assert asyncio.run(_consumer_replicas(cluster.urls, "CART", "billing")) == 3
        for round_ in range(rounds):
            holder = _node_of(cluster, SERVICES[round_ % 2])
            cluster.move_stream_leader("CART", holder)
            load.wait_for_answers(200, 20)
            published = _last_sequence(cluster)
            cluster.nodes[holder].kill()
            killed = time.monotonic()
            # Publishing resumes once another node leads the stream and the relay reconnected.
            _wait_for_publishes_after(cluster, published)
            resumed_s.append(time.monotonic() - killed)
            assert cluster.stream_leader("CART") != holder
            _node_of(cluster, SERVICES[round_ % 2])  # the service reconnected elsewhere
            cluster.nodes[holder].start()
            cluster.wait_ready()
            cluster.wait_stream_current("CART")
        load.wait_for_answers(200, 50)
        load.stop()
        result = audit(system, load)
        applied = system.applied()  # billing ran throughout: its counter covers every event

    twice = result.wrong_bills + max(0, int(applied) - result.events)
    report(
        audited(
            f"cluster: stream leader SIGKILL, 3 nodes, R3 (publishing resumed in "
            f"{min(resumed_s):.1f}-{max(resumed_s):.1f} s)",
            rounds,
            result,
            load,
            max(resumed_s),
            applied_twice=twice,
        )
    )
    assert (result.lost, twice, load.server_errors()) == (0, 0, 0), load.statuses()
    assert applied == result.events


@pytest.mark.reliability_smoke
def test_streams_get_the_replicas_asked_for_and_never_lose_any(tmp_path: Path) -> None:
    with NatsCluster(3, tmp_path) as cluster:

        async def ensure(replicas: int) -> int:
            client = await nats.connect(cluster.urls)
            try:
                info = await ensure_stream(
                    client.jetstream(), "CART", ["cart.events"], replicas=replicas
                )
                return info.config.num_replicas or 1
            finally:
                await client.close()

        assert asyncio.run(ensure(1)) == 1
        assert asyncio.run(ensure(3)) == 3  # raised on an existing stream
        assert asyncio.run(ensure(1)) == 3  # a client with the default does not lower it
        assert cluster.stream_replicas("CART") == 3


def _node_of(cluster: NatsCluster, client_name: str) -> int:
    """The index of the node `client_name` is connected to, once it is connected."""
    found: list[int] = []

    def connected() -> bool:
        found[:] = [
            index for index, node in enumerate(cluster.nodes) if client_name in node.client_names()
        ]
        return len(found) == 1

    wait_for(connected, 60, f"{client_name} connected to one node")
    return found[0]


def _last_sequence(cluster: NatsCluster) -> int:
    info = cluster.stream_info("CART")
    return info.state.last_seq if info is not None else 0


def _wait_for_publishes_after(cluster: NatsCluster, sequence: int) -> None:
    wait_for(lambda: _last_sequence(cluster) > sequence, 60, "publishing to resume")


async def _consumer_replicas(urls: list[str], stream: str, durable: str) -> int:
    client = await nats.connect(urls)
    try:
        info = await client.jetstream().consumer_info(stream, durable)
        return 1 + len(info.cluster.replicas or []) if info.cluster else 1
    finally:
        await client.close()
