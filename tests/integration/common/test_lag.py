"""Consumer lag read from the harness's real Kafka: committed offsets against end offsets."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from prometheus_client import REGISTRY

from paht_common.kafka import make_producer
from paht_common.lag import kafka_lag_monitor
from paht_common.runtime import Runtime
from paht_common.settings import BaseServiceSettings
from paht_common.testing import random_id
from paht_devenv.kafka import create_topics

pytestmark = pytest.mark.integration


async def _produce(bootstrap: str, topic: str, counts: dict[int, int]) -> None:
    producer = make_producer(bootstrap, client_id=random_id("p"))
    await producer.start()
    try:
        for partition, count in counts.items():
            for i in range(count):
                await producer.send(topic, value=f"{i}".encode(), partition=partition)
        await producer.flush()
    finally:
        await producer.stop()


async def _commit(bootstrap: str, group: str, offsets: dict[TopicPartition, int]) -> None:
    """Commit offsets for ``group`` as a consumer would, without reading anything."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        consumer.assign(list(offsets))
        await consumer.commit(offsets)
    finally:
        await consumer.stop()


def _gauge(group: str, topic: str, partition: int) -> float | None:
    labels = {"consumer_group": group, "topic": topic, "partition": str(partition)}
    return REGISTRY.get_sample_value("paht_consumer_lag_records", labels)


async def test_one_tick_reports_end_minus_committed_and_all_records_where_nothing_committed(
    kafka_bootstrap: str,
) -> None:
    topic, group = random_id("lag-topic-"), random_id("lag-group-")
    await create_topics(kafka_bootstrap, [topic], wait_seconds=30, partitions=2)
    await _produce(kafka_bootstrap, topic, {0: 10, 1: 4})
    await _commit(kafka_bootstrap, group, {TopicPartition(topic, 0): 3})

    monitor = kafka_lag_monitor(
        kafka_bootstrap, group_id=group, topics=(topic,), interval_seconds=5
    )
    async with monitor:
        lags = await monitor.tick()

    assert lags == {(topic, 0): 7, (topic, 1): 4}
    assert _gauge(group, topic, 0) == 7
    assert _gauge(group, topic, 1) == 4


async def test_runtime_watch_lag_keeps_the_gauge_of_a_group_current(
    fresh_database: str, kafka_bootstrap: str, tmp_path: Path
) -> None:
    topic, group = random_id("lag-topic-"), random_id("lag-group-")
    await create_topics(kafka_bootstrap, [topic], wait_seconds=30, partitions=1)
    await _produce(kafka_bootstrap, topic, {0: 5})
    settings = BaseServiceSettings(
        database_url=fresh_database,
        kafka_bootstrap=kafka_bootstrap,
        outbox_relay=False,
        consumer_lag_interval_seconds=0.1,
    )

    async with Runtime(service="t", settings=settings, migrations=tmp_path) as rt:
        rt.watch_lag(group, (topic,))
        before = await _wait_for_gauge(group, topic, 5)
        await _commit(kafka_bootstrap, group, {TopicPartition(topic, 0): 5})
        after = await _wait_for_gauge(group, topic, 0)

    assert (before, after) == (5, 0)


async def _wait_for_gauge(group: str, topic: str, expected: float) -> float | None:
    """The gauge of partition 0 once it equals ``expected`` (or its last value after 30 s)."""
    value = _gauge(group, topic, 0)
    for _ in range(300):
        if value == expected:
            break
        await asyncio.sleep(0.1)
        value = _gauge(group, topic, 0)
    return value
