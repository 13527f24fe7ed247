"""A realistic upstream: seeded Kaltim registrations, contributions and claims (scenario.py), published to Kafka
(publish.py)."""
from streams.simulator.scenario import Scenario, SimEvent

__all__ = ["Scenario", "SimEvent"]
