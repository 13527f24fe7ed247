"""Session fixtures: one real Kafka broker and one real Apicurio Registry, started by the project's launcher.
Each test gets its own topic prefix (and so its own topics, subjects and consumer groups)."""
from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from streams.config import Settings
from streams.launcher import KafkaBroker, SchemaRegistry


@pytest.fixture(autouse=True)
def no_service_outlives_its_test():
    """Workers and sinks a test started and did not stop (e.g. it failed in a wait) are stopped after it; those of
    module fixtures (set up before this function-scoped one) stay for the module's other tests."""
    from tests.worker import RUNNING, stop_leftovers
    before = set(RUNNING)
    yield
    stop_leftovers(keep=before)


@pytest.fixture(scope="session")
def base_settings() -> Settings:
    return Settings()


@pytest.fixture(scope="session")
def kafka(tmp_path_factory, base_settings) -> KafkaBroker:
    broker = KafkaBroker.start_new(tmp_path_factory.mktemp("kafka"), cache_dir=base_settings.cache_dir,
                                   version=base_settings.kafka_version)
    yield broker
    broker.stop()


@pytest.fixture(scope="session")
def registry(kafka, tmp_path_factory, base_settings) -> SchemaRegistry:
    reg = SchemaRegistry.start_new(tmp_path_factory.mktemp("registry"), bootstrap=kafka.bootstrap,
                                   cache_dir=base_settings.cache_dir, version=base_settings.apicurio_version)
    yield reg
    reg.stop()


def unique(prefix: str = "t") -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


@pytest.fixture
def settings(kafka, registry, tmp_path: Path) -> Settings:
    """Settings for one test: the session's broker and registry, a topic prefix of its own."""
    return Settings(kafka_bootstrap_servers=kafka.bootstrap, schema_registry_url=registry.url,
                    topic_prefix=unique() + ".", state_dir=tmp_path / "state", topic_partitions=3)


@pytest.fixture
def serde(registry):
    from streams.serde import AvroSerde
    return AvroSerde(registry.url)


@pytest.fixture(scope="session")
def postgres(tmp_path_factory):
    """One real PostgreSQL server (Debian package) on loopback; each test makes its own database."""
    from streams.launcher.postgres import PostgresServer
    server = PostgresServer.start_new(tmp_path_factory.mktemp("postgres"))
    yield server
    server.destroy()


@pytest.fixture(params=["sqlite", "postgresql"])
def warehouse_url(request, tmp_path) -> str:
    """A fresh, empty warehouse database of each kind."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'warehouse.db'}"
    return request.getfixturevalue("postgres").create_database(unique("wh"))


SERVICES = {"kafka", "registry", "postgres", "own_broker"}


def pytest_collection_modifyitems(config, items):
    """``-m unit``: every test whose fixtures (followed all the way down) start no broker, registry or PostgreSQL,
    and that starts none of its own (``slow``, ``stack``; PostgreSQL through the ``warehouse_url`` parameter)
    (`make unit`: seconds)."""
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        starts_services = (SERVICES & set(getattr(item, "fixturenames", ())) or params.get("warehouse_url") == "postgresql"
                           or item.get_closest_marker("slow") or item.get_closest_marker("stack"))
        if not starts_services:
            item.add_marker(pytest.mark.unit)
