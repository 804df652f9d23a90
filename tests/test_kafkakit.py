"""tests/kafkakit.py: the session's real broker takes writes, serves reads, keeps topics apart."""

from __future__ import annotations

from confluent_kafka import Consumer, Producer, TopicPartition

from tests import kafkakit


def test_the_shared_broker_round_trips_keyed_messages(kafka: kafkakit.KafkaBroker) -> None:
    topic = kafka.create_topic(kafkakit.unique("kit"), partitions=3)
    producer = Producer({"bootstrap.servers": kafka.bootstrap})
    sent = {f"item-{i}".encode(): f'{{"n":{i}}}'.encode() for i in range(30)}
    for key, value in sent.items():
        producer.produce(topic, value, key)
    assert producer.flush(30) == 0
    consumer = Consumer(
        {"bootstrap.servers": kafka.bootstrap, "group.id": kafkakit.unique("g"), "log_level": 0}
    )
    consumer.assign([TopicPartition(topic, p, 0) for p in range(3)])
    got: dict[bytes, bytes] = {}
    partitions_of: dict[bytes, set[int]] = {}
    for _ in range(50):
        for message in consumer.consume(100, timeout=0.5):
            assert message.error() is None
            key = message.key()
            got[key] = message.value()
            partitions_of.setdefault(key, set()).add(message.partition())
        if len(got) == len(sent):
            break
    consumer.close()
    assert got == sent
    # The default partitioner spreads keys over all three partitions.
    assert {p for ps in partitions_of.values() for p in ps} == {0, 1, 2}


def test_a_second_request_gets_the_same_broker(
    kafka: kafkakit.KafkaBroker, tmp_path_factory
) -> None:  # type: ignore[no-untyped-def]
    root = tmp_path_factory.getbasetemp()
    # Whichever worker started it, the record names the live broker this session uses.
    again = kafkakit.shared_broker(root.parent if root.name.startswith("popen-") else root)
    assert (again.pid, again.port) == (kafka.pid, kafka.port)
    assert again.alive()
