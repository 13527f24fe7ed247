"""docker-compose.yml and the Dockerfile, checked statically (no Docker engine here): services, commands, env vars
and ports agree with the code's CLI and config, every mounted file exists, scrape and webhook targets resolve."""
from __future__ import annotations

from urllib.parse import urlparse

import yaml

from streams.cli import app as cli
from streams.config import PROJECT_ROOT, Settings

COMPOSE = yaml.safe_load((PROJECT_ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
OURS = {name: s for name, s in SERVICES.items() if s.get("build") == "."}


def test_the_whole_stack_is_there():
    assert {"kafka", "schema-registry", "worker", "worker-2", "sink", "postgres", "prometheus", "alertmanager",
            "grafana", "simulator"} <= set(SERVICES)


def test_project_services_run_real_commands_with_real_settings():
    commands = {c.name or c.callback.__name__ for c in cli.registered_commands}
    fields = {name.upper() for name in Settings.model_fields}
    for name, service in OURS.items():
        assert service["command"][0] in commands, name
        unknown = set(service.get("environment", {})) - fields
        assert not unknown, f"{name}: {unknown} are not settings"
        Settings(**{k.lower(): v for k, v in service["environment"].items() if k != "PSEUDONYM_KEY"})


def test_published_ports_match_the_configured_ones():
    for name in ("worker", "worker-2"):
        env = SERVICES[name]["environment"]
        assert any(p.endswith(f":{env['WEB_PORT']}") for p in SERVICES[name]["ports"])
        assert env["HTTP_HOST"] == "0.0.0.0", "reachable from the other containers"


def test_every_mounted_file_exists():
    for name, service in SERVICES.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (PROJECT_ROOT / source).exists(), f"{name} mounts missing {source}"


def test_scrape_and_webhook_targets_are_compose_services_on_their_ports():
    prometheus = yaml.safe_load((PROJECT_ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    for job in prometheus["scrape_configs"]:
        for target in job["static_configs"][0]["targets"]:
            host, port = target.split(":")
            env = SERVICES[host]["environment"]
            assert port in (env.get("METRICS_PORT"), env.get("SINK_METRICS_PORT")), target
    alertmanager = yaml.safe_load((PROJECT_ROOT / "deploy" / "alertmanager" / "alertmanager.yml").read_text())
    for receiver in alertmanager["receivers"]:
        for hook in receiver["webhook_configs"]:
            assert urlparse(hook["url"]).hostname in SERVICES
    # one stall, one notification: with Alertmanager in the stack nothing else POSTs alerts to its receivers
    assert "alertmanager" in SERVICES
    assert not any("ALERT_WEBHOOK_URL" in service.get("environment", {}) for service in OURS.values())
    assert urlparse(SERVICES["sink"]["environment"]["WAREHOUSE_URL"]).hostname == "postgres"


def test_dockerfile_copies_what_exists():
    for line in (PROJECT_ROOT / "Dockerfile").read_text().splitlines():
        if line.startswith("COPY "):
            for source in line.split()[1:-1]:
                assert (PROJECT_ROOT / source).exists(), source


ONE_SHOT = {"topics"}  # runs to completion; everything else runs until stopped


def test_every_service_restarts_and_waits_for_what_it_needs_to_be_healthy():
    for name, service in SERVICES.items():
        assert service.get("restart") == ("on-failure" if name in ONE_SHOT | {"simulator"} else "unless-stopped"), name
        depends = service.get("depends_on", {})
        assert isinstance(depends, dict), f"{name}: depends_on needs conditions, not a bare list"
        for needed, how in depends.items():
            condition = how["condition"]
            if needed in ONE_SHOT:
                assert condition == "service_completed_successfully", (name, needed)
            elif needed in ("kafka", "schema-registry", "postgres"):
                assert condition == "service_healthy", (name, needed)
                assert "healthcheck" in SERVICES[needed], f"{needed} has no healthcheck to wait for"
    # whatever talks to the registry waits until it answers
    for name in ("simulator", "worker", "worker-2", "sink"):
        assert SERVICES[name]["depends_on"]["schema-registry"] == {"condition": "service_healthy"}, name


def test_project_services_are_probed_on_their_own_ports_and_paths():
    for name in ("worker", "worker-2"):
        check = " ".join(SERVICES[name]["healthcheck"]["test"])
        assert f"localhost:{SERVICES[name]['environment']['WEB_PORT']}/readyz" in check
    sink = SERVICES["sink"]
    assert f"localhost:{sink['environment']['SINK_METRICS_PORT']}/livez" in " ".join(sink["healthcheck"]["test"])


def test_consumers_accept_the_simulators_clock_running_ahead():
    """The simulator goes live ahead of the wall clock (as under `jamsostek run`): the consumers' future bound must
    allow it, or after ~30-40 minutes every record is dead-lettered as invalid_timestamp."""
    from streams.simulator import Scenario
    assert "simulator" in SERVICES
    months = Scenario.load().months
    for name in ("worker", "worker-2", "sink"):
        bound = float(SERVICES[name]["environment"]["MAX_FUTURE_DAYS"])
        assert bound >= 365 * 100 and bound >= months * 31, name
    for name in ("worker", "worker-2"):  # and the page says the figures are simulated
        assert Settings(simulated=SERVICES[name]["environment"]["SIMULATED"]).simulated is True
