"""The whole local stack in one context manager: a KRaft broker and Apicurio Registry with persistent state."""
from __future__ import annotations

import contextlib
from typing import Iterator

from rich.console import Console

from streams.config import Settings
from streams.launcher.kafka import KafkaBroker
from streams.launcher.process import free_port
from streams.launcher.registry import SchemaRegistry


@contextlib.contextmanager
def local_stack(settings: Settings, console: Console | None = None) -> Iterator[Settings]:
    """Start broker + registry under ``settings.state_dir``; yields settings pointing at them; stops both."""
    console = console or Console(stderr=True)
    state = settings.state_dir
    broker = KafkaBroker(state / "kafka", settings.local_broker_port, settings.local_controller_port,
                         settings.kafka_version, settings.cache_dir, settings.topic_partitions)
    registry = None
    try:
        with console.status(f"starting Apache Kafka {settings.kafka_version} (KRaft) on 127.0.0.1:{broker.port} ..."):
            broker.start()
        console.print(f"[green]✓[/] Kafka {settings.kafka_version} ready on {broker.bootstrap} "
                      f"in {broker.startup_seconds:.1f}s (log: {broker.log})")
        registry = SchemaRegistry(state / "registry", broker.bootstrap, settings.local_registry_port, free_port(),
                                  settings.apicurio_version, settings.cache_dir)
        with console.status(f"starting Apicurio Registry {settings.apicurio_version} (schemas kept in Kafka) ..."):
            registry.start()
        console.print(f"[green]✓[/] schema registry ready at {registry.url} in {registry.startup_seconds:.1f}s")
        yield settings.model_copy(update={"kafka_bootstrap_servers": broker.bootstrap,
                                          "schema_registry_url": registry.url})
    finally:
        if registry is not None:
            registry.stop()
        broker.stop()
        console.print("stopped the local stack")
