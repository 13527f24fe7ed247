"""The contract's partitioner (streams/partitioner.py) against kafka-python's murmur2 and Kafka's own test
vectors. No broker."""
from __future__ import annotations

from types import SimpleNamespace

from hypothesis import given, settings as hsettings, strategies as st
from kafka.partitioner.default import murmur2

from streams.partitioner import _murmur2_same_length, misplaced, partitions_of


def reference(key: bytes, partitions: int) -> int:
    """kafka-python's DefaultPartitioner for a key: ``(murmur2(key) & 0x7fffffff) % partitions``."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


def signed(value: int) -> int:
    return value - (1 << 32) if value >= 1 << 31 else value


def test_kafka_s_own_murmur2_vectors():
    """``UtilsTest.testMurmur2`` of Apache Kafka: the Java client's values (signed 32-bit)."""
    vectors = {b"21": -973932308, b"foobar": -790332482, b"a-little-bit-long-string": -985981536,
               b"a-little-bit-longer-string": -1486304829,
               b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971, b"abc": 479470107}
    for key, want in vectors.items():
        assert signed(int(_murmur2_same_length([key], len(key))[0])) == want, key


@hsettings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=40), max_size=60), st.integers(1, 64))
def test_every_key_gets_the_partition_kafka_python_gives_it(keys, partitions):
    assert partitions_of(keys, partitions) == [reference(k, partitions) for k in keys]


def test_nik_keys_of_one_batch_are_checked_against_their_partition_and_counted_per_topic():
    niks = [f"6408{i:012d}".encode() for i in range(500)]
    records = [SimpleNamespace(topic="t", key=k, partition=reference(k, 4)) for k in niks]
    assert misplaced(records, 4) == {}
    one_partition = [SimpleNamespace(topic=t, key=k, partition=2) for k in niks for t in ("a", "b")]  # all on 2
    elsewhere = sum(reference(k, 4) != 2 for k in niks)
    assert misplaced(records + one_partition, 4) == {"a": elsewhere, "b": elsewhere} and elsewhere > 300
    assert misplaced([SimpleNamespace(topic="t", key=None, partition=1)], 4) == {} and misplaced([], 4) == {}
