"""Scale-out under fire: 3 cart and 3 billing instances on PostgreSQL, as processes, with HTTP
load sent round-robin through every cart instance. Midway one cart instance, one billing
instance and (on NATS) the node leading stream CART are SIGKILLed, the cart instance at a
moment its relay holds leased outbox rows; while they are down the survivors must publish those
rows (once the lease ends) and bill everything stored so far; then they are started again.
Afterwards every command answered 200 is stored, every bill and invoice equals the model from
the price list, and no event was applied twice by any instance.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer
from scaled_system import ScaledSystem, instance_id, running_scaled_system

from support import postgres
from support.nats_cluster import NatsCluster
from support.processes import wait_for
from support.reliability import Load, audit, audited, report
from support.system import KAFKA_SESSION_TIMEOUT_MS
from support.tansu import TansuServer, tansu_or_skip

pytestmark = [pytest.mark.scale, pytest.mark.e2e, pytest.mark.postgres]

CARTS = [f"scale-{n}" for n in range(300)]
CLIENTS = 6
KAFKA_PARTITIONS = 6
# The relays' outbox lease, shorter than the default 15 s: the survivors wait it out.
LEASE_S = "5"
# The survivors must bill what was stored at the kill within this: the dead relay's lease
# (5 s) or JetStream's ack wait for what the dead billing held (30 s), plus elections.
RECOVERY_TIMEOUT_S = 60.0

Restart = Callable[[], None]


@pytest.fixture
def databases(postgres_server_url: str) -> Iterator[tuple[str, str]]:
    """A fresh cart event store and a fresh billing database on the PostgreSQL server."""
    with (
        postgres.fresh_schema(postgres_server_url) as cart_db,
        postgres.fresh_schema(postgres_server_url) as billing_db,
    ):
        yield cart_db, billing_db


@pytest.mark.nats
def test_on_a_nats_cluster_instances_and_the_stream_leader_killed_under_load_lose_nothing(
    tmp_path: Path, databases: tuple[str, str]
) -> None:
    cart_db, billing_db = databases
    with NatsCluster(3, tmp_path / "nats") as cluster:
        env = {
            "MSC_BROKER": "nats",
            "MSC_NATS_URL": ",".join(cluster.urls),
            "MSC_NATS_REPLICAS": "3",
            "MSC_RELAY_LEASE_S": LEASE_S,
        }
        with running_scaled_system(
            tmp_path, cart_db=cart_db, billing_db=billing_db, env=env
        ) as system:
            assert cluster.stream_replicas("CART") == 3

            def kill_stream_leader() -> Restart:
                leader = cluster.nodes[cluster.stream_leader("CART")]
                print(f"killing {leader.name}, leading CART; its clients: {leader.client_names()}")
                leader.kill()

                def restart() -> None:
                    leader.start()
                    cluster.wait_ready()
                    cluster.wait_stream_current("CART")

                return restart

            run_and_check(
                system,
                "scale: 3+3 on a NATS R3 cluster, kill cart + billing + CART leader",
                kill_stream_leader,
            )


@pytest.mark.kafka
def test_on_kafka_instances_killed_under_load_lose_nothing_and_bill_once(
    tmp_path: Path, databases: tuple[str, str]
) -> None:
    tansu_or_skip()
    cart_db, billing_db = databases
    with TansuServer(tmp_path / "tansu") as tansu:
        env = {
            "MSC_BROKER": "kafka",
            "MSC_KAFKA_BOOTSTRAP": tansu.bootstrap,
            "MSC_KAFKA_SESSION_TIMEOUT_MS": KAFKA_SESSION_TIMEOUT_MS,
            "MSC_KAFKA_PARTITIONS": str(KAFKA_PARTITIONS),
            "MSC_RELAY_LEASE_S": LEASE_S,
        }
        with running_scaled_system(
            tmp_path, cart_db=cart_db, billing_db=billing_db, env=env
        ) as system:
            # Tansu is a single broker, memory-only: only the service instances are killed.
            run_and_check(system, "scale: 3+3 on Kafka (Tansu, 1 broker), kill cart + billing")
            assert asyncio.run(partitions_of(tansu.bootstrap, "cart.events")) == KAFKA_PARTITIONS


def run_and_check(
    system: ScaledSystem, suite: str, kill_broker_node: Callable[[], Restart] | None = None
) -> None:
    """Load through every cart instance; SIGKILL cart 2, billing 2 (and a broker node) midway;
    check the survivors bill everything stored while those are down; restart them; audit."""
    cart, billing = system.carts[1], system.billings[1]
    with system.diagnosed(), Load(system.cart_urls, CARTS, clients=CLIENTS, seed=9) as load:
        load.wait_for_answers(200, 150)
        wait_for(
            lambda: all(system.applied_by_instance().values()),
            30,
            "every billing instance to apply events",
        )
        held = system.kill_cart_holding_leases(cart, timeout=30)
        assert held, "the cart instance was killed while its relay held leased rows"
        billing.kill()
        restart_broker_node = kill_broker_node() if kill_broker_node else None
        killed = time.monotonic()
        # The survivors must publish the rows the dead relay held (once its lease ends) and
        # bill everything stored by then, while the load carries on through them.
        system.wait_until_billed_through(system.stored_versions(), RECOVERY_TIMEOUT_S)
        system.wait_until_published(held, RECOVERY_TIMEOUT_S)
        recover_s = time.monotonic() - killed
        load.wait_for_answers(200, 150)
        cart.start()
        billing.start()
        if restart_broker_node is not None:
            restart_broker_node()
        load.wait_for_answers(200, 150)
    with system.diagnosed():
        result = audit(system.view(), load)
    served = system.commands_served()  # since each instance last started

    stored = system.stored_event_ids()
    applied = system.applied_by_instance()
    total: Counter[str] = Counter()
    for counts in applied.values():
        total.update(counts)
    twice = sum(n > 1 for n in total.values()) + result.wrong_bills
    unknown = set(total) - stored
    invoice_problems = system.invoice_problems(system.stored_versions())

    report(
        audited(
            f"{suite}; the dead relay held {len(held)} leased rows",
            1,
            result,
            load,
            recover_s,
            applied_twice=twice,
        )
    )
    print(f"applied per billing instance: { {k: sum(v.values()) for k, v in applied.items()} }")
    print(f"invoices issued: {system.invoice_count()}")
    print(f"commands per cart instance since its last start: {served}; {load.statuses()}")
    published = system.published_by_relay()
    print(f"outbox rows published per relay: {dict(published)}")
    assert (result.lost, twice, load.server_errors()) == (0, 0, 0), load.statuses()
    assert not unknown, f"billing applied events that are not stored: {sorted(unknown)[:5]}"
    assert invoice_problems == [], invoice_problems[:5]
    assert system.invoice_count() > 0, "some carts were checked out and invoiced"
    assert len(served) == len(system.carts), served
    assert all(served.values()), f"every cart instance answered commands: {served}"
    assert set(published) == {instance_id(cart) for cart in system.carts}, published
    assert result.commands > 450


async def partitions_of(bootstrap: str, topic: str) -> int:
    """How many partitions `topic` has on the broker."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        await consumer.topics()  # fetches the cluster's metadata
        return len(consumer.partitions_for_topic(topic) or set())
    finally:
        await consumer.stop()
