"""Launcher behaviour beyond the happy path: JDK discovery errors, ports in use, restart with data kept."""
from __future__ import annotations

import socket

import pytest
from kafka import KafkaProducer

from streams.launcher import KafkaBroker, LauncherError
from streams.launcher import jdk
from tests.conftest import unique
from tests.helpers import read_all


def test_missing_jdk_is_a_clear_error():
    with pytest.raises(LauncherError) as err:
        jdk.find_java(99, "A future Kafka")
    message = str(err.value)
    assert "needs Java 99 or newer" in message and "JAVA_HOME" in message


def test_no_java_anywhere_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(jdk, "candidates", lambda: [])
    with pytest.raises(LauncherError, match="no `java` on PATH"):
        jdk.find_java(17, "Apache Kafka")


def test_jdks_on_this_machine_are_found():
    assert jdk.java_version(jdk.find_java(17, "Apache Kafka")) >= 17
    assert jdk.java_version(jdk.find_java(21, "Apicurio Registry")) >= 21


def test_port_in_use_is_reported(tmp_path, base_settings):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        taken = s.getsockname()[1]
        with pytest.raises(LauncherError, match=f"port {taken} .* is in use"):
            KafkaBroker.start_new(tmp_path, cache_dir=base_settings.cache_dir, version=base_settings.kafka_version,
                                  port=taken)


@pytest.mark.stack
def test_restart_keeps_topics_and_data(tmp_path, base_settings):
    broker = KafkaBroker.start_new(tmp_path, cache_dir=base_settings.cache_dir, version=base_settings.kafka_version)
    topic = unique("keep-")
    try:
        producer = KafkaProducer(bootstrap_servers=broker.bootstrap)
        for i in range(50):
            producer.send(topic, value=str(i).encode())
        producer.flush()
        producer.close()
        broker.stop()
        assert not broker.running
        broker.start()
        values = [r.value for r in read_all(broker.bootstrap, topic, expected=50)]
        assert sorted(values, key=int) == [str(i).encode() for i in range(50)]  # 4 partitions: no global order
    finally:
        broker.stop()
