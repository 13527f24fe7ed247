"""The project's launcher for a real local Kafka stack: Apache Kafka (KRaft, single node) and Apicurio Registry,
both run from Maven Central artefacts with the machine's JDK. Used by the CLI (`jamsostek broker`, `jamsostek run`)
and by the test fixtures."""
from streams.launcher.errors import LauncherError
from streams.launcher.kafka import KafkaBroker
from streams.launcher.registry import SchemaRegistry

__all__ = ["KafkaBroker", "LauncherError", "SchemaRegistry"]
