"""Security against the real broker: SASL/SCRAM logins end to end (admin, publisher, worker, sink), wrong or
missing credentials refused; the web endpoints are read-only and never show a stack trace."""
from __future__ import annotations

import pytest
import requests
from confluent_kafka.admin import AdminClient
from confluent_kafka import KafkaException
from pydantic import SecretStr

from streams.config import Settings
from streams.simulator import Scenario
from tests.conftest import unique
from tests.expected import expected_regions
from tests.test_topology import assert_regions_soon, publish
from tests.test_warehouse import expected_facts, warehouse_facts
from tests.worker import Sink, Worker

USER, PASSWORD = "jamsostek-worker", "scram-test-password-1"


@pytest.fixture(scope="module")
def scram_broker(tmp_path_factory, base_settings):
    from streams.launcher import KafkaBroker
    broker = KafkaBroker.start_new(tmp_path_factory.mktemp("scram"), cache_dir=base_settings.cache_dir,
                                   version=base_settings.kafka_version, scram_users={USER: PASSWORD})
    yield broker
    broker.stop()


def scram_settings(broker, registry, tmp_path, password: str = PASSWORD) -> Settings:
    return Settings(kafka_bootstrap_servers=broker.sasl_bootstrap, schema_registry_url=registry.url,
                    kafka_security_protocol="SASL_PLAINTEXT", kafka_sasl_mechanism="SCRAM-SHA-512",
                    kafka_sasl_username=USER, kafka_sasl_password=SecretStr(password),
                    topic_prefix=unique() + ".", topic_partitions=2, state_dir=tmp_path / "state",
                    app_id=unique("app-"), target_scale=0.01, warehouse_url=f"sqlite:///{tmp_path / 'wh.db'}")


def test_wrong_or_missing_credentials_are_refused(scram_broker, registry, tmp_path):
    wrong = scram_settings(scram_broker, registry, tmp_path, password="not-the-password")
    with pytest.raises(KafkaException):
        AdminClient({**wrong.librdkafka_conf(), "log_level": 0}).list_topics(timeout=8)
    plaintext = {"bootstrap.servers": scram_broker.sasl_bootstrap, "log_level": 0}
    with pytest.raises(KafkaException):
        AdminClient(plaintext).list_topics(timeout=8)
    good = scram_settings(scram_broker, registry, tmp_path)
    assert AdminClient(good.librdkafka_conf()).list_topics(timeout=15).brokers


def test_pipeline_runs_end_to_end_over_sasl_scram(scram_broker, registry, tmp_path):
    settings = scram_settings(scram_broker, registry, tmp_path)
    events = list(Scenario.load(scale=0.01, seed=3, duplicate_share=0.02).events(3))
    publish(settings, events)  # topics created and records published with SCRAM logins
    worker, sink = Worker(settings, tmp_path / "worker.log"), Sink(settings, tmp_path / "sink.log")
    assert "KAFKA_SASL_PASSWORD" in worker.env  # children get the secret through the environment only
    try:
        worker.start()
        sink.start()
        worker.wait(lambda: sum(worker.events_accounted().values()) >= len(events), 180, "every record accounted")
        assert_regions_soon(worker, expected_regions(events, scale=0.01))
        sink.wait(lambda: warehouse_facts(settings.warehouse_url) == expected_facts(events), 120, "facts written")
        assert PASSWORD not in worker.log.read_text() + sink.log.read_text()
        # the web endpoints: read-only, errors without stack traces
        for method in ("post", "put", "delete", "patch"):
            for path in ("/regions/", "/regions/64.72/", "/region/64.72/", "/readyz/", "/about/", "/healthz/", "/"):
                answer = getattr(requests, method)(worker.url(path), data=b"{}", timeout=5)
                assert answer.status_code in (404, 405), (method, path, answer.status_code)
                assert "Traceback" not in answer.text and 'File "' not in answer.text
        for path in ("/regions/%00/", "/regions/" + "9" * 5000 + "/", "/../../etc/passwd", "/regions/64.72/x/",
                     "/region/99.99/", "/region/<script>/"):
            answer = requests.get(worker.url(path), timeout=5)
            assert answer.status_code in (400, 404, 414), (path, answer.status_code)
            assert "Traceback" not in answer.text and 'File "' not in answer.text
    finally:
        worker.stop()
        sink.stop()
