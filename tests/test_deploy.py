"""deploy/: Prometheus scrape config and alert rules (promtool check + unit tests), Alertmanager config (amtool),
and the metric names the rules use exist in the code's metrics module."""
from __future__ import annotations

import re
import shutil
import subprocess

import pytest
import yaml

from streams.config import PROJECT_ROOT

DEPLOY = PROJECT_ROOT / "deploy"


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is missing: scripts/bootstrap.sh test installs it (Debian prometheus packages)")
    return path


def run(*cmd: str, cwd=None) -> str:
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, timeout=120)
    assert done.returncode == 0, f"{' '.join(cmd)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


def test_prometheus_rules_and_config_are_valid():
    out = run(tool("promtool"), "check", "rules", str(DEPLOY / "prometheus" / "rules" / "jamsostek.yml"))
    assert "SUCCESS: 10 rules found" in out
    run(tool("promtool"), "check", "config", "--syntax-only", str(DEPLOY / "prometheus" / "prometheus.yml"))


def test_prometheus_rule_unit_tests_pass():
    out = run(tool("promtool"), "test", "rules", "jamsostek_test.yml", cwd=DEPLOY / "prometheus" / "tests")
    assert "SUCCESS" in out


def test_alertmanager_config_is_valid():
    out = run(tool("amtool"), "check-config", str(DEPLOY / "alertmanager" / "alertmanager.yml"))
    assert "SUCCESS" in out


def test_rules_only_use_metrics_the_code_exports():
    rules = yaml.safe_load((DEPLOY / "prometheus" / "rules" / "jamsostek.yml").read_text())
    used = set()
    for group in rules["groups"]:
        for rule in group["rules"]:
            used |= set(re.findall(r"\b(jamsostek_[a-z_]+)", rule["expr"]))
    assert used and used <= exported_metric_names(), used - exported_metric_names()


def exported_metric_names() -> set[str]:
    """Every sample name the worker's and sink's metrics module can export (counters with _total, histograms with
    _bucket/_sum/_count)."""
    from streams.metrics import SINK_REGISTRY, WORKER_REGISTRY
    names = set()
    for family in [*WORKER_REGISTRY.collect(), *SINK_REGISTRY.collect()]:
        names.add(family.name)
        if family.type == "counter":
            names.add(family.name + "_total")
        if family.type == "histogram":
            names |= {family.name + suffix for suffix in ("_bucket", "_sum", "_count")}
    return names


def test_grafana_dashboard_queries_parse_and_name_real_metrics(tmp_path):
    import json
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "jamsostek.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    assert len(exprs) >= 8 and len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])
    # promtool parses PromQL in rule files: every panel query as a recording rule
    rules = {"groups": [{"name": "dashboard", "rules": [{"record": f"panel:{i}", "expr": e}
                                                         for i, e in enumerate(exprs)]}]}
    (tmp_path / "panels.yml").write_text(yaml.safe_dump(rules))
    assert f"SUCCESS: {len(exprs)} rules found" in run(tool("promtool"), "check", "rules", str(tmp_path / "panels.yml"))
    named = {m for e in exprs for m in re.findall(r"\b(jamsostek_[a-z_]+)", e)}
    assert "jamsostek_region_quota_total" not in named  # our own dashboard uses the correctly named gauge
    assert named <= exported_metric_names(), named - exported_metric_names()
    titles = " ".join(p["title"].lower() for p in dashboard["panels"])
    for topic in ("coverage", "quota", "claims", "stalled", "lag", "dead letters"):
        assert topic in titles
    provisioning = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text())
    assert provisioning["datasources"][0]["uid"] == dashboard["panels"][0]["datasource"]["uid"]


def k8s_documents() -> list[dict]:
    """What `kubectl apply -k deploy/k8s` applies (the kustomization's resources)."""
    kustomization = yaml.safe_load((DEPLOY / "k8s" / "kustomization.yaml").read_text())
    docs = []
    for resource in kustomization["resources"]:
        docs += [d for d in yaml.safe_load_all((DEPLOY / "k8s" / resource).read_text()) if d]
    return docs


def test_k8s_manifests_are_consistent():
    from streams.cli import app as cli
    from streams.config import Settings
    docs = k8s_documents()
    kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
    assert {("StatefulSet", "jamsostek-worker"), ("Deployment", "jamsostek-sink"), ("Service", "jamsostek-worker"),
            ("ConfigMap", "jamsostek-config"), ("ServiceMonitor", "jamsostek"), ("PrometheusRule", "jamsostek"),
            ("PodDisruptionBudget", "jamsostek-worker"), ("PodDisruptionBudget", "jamsostek-sink")} <= kinds
    config = next(d for d in docs if d["kind"] == "ConfigMap")
    # one stall, one notification: the PrometheusRule goes through Alertmanager, so the sink does not POST too
    assert "ALERT_WEBHOOK_URL" not in config["data"]
    fields = {name.upper() for name in Settings.model_fields}
    assert set(config["data"]) <= fields
    Settings(**{k.lower(): v for k, v in config["data"].items()})  # the values parse
    commands = {c.name or c.callback.__name__ for c in cli.registered_commands}
    services = [d for d in docs if d["kind"] == "Service"]
    for workload in (d for d in docs if d["kind"] in ("StatefulSet", "Deployment")):
        spec = workload["spec"]["template"]["spec"]
        labels = workload["spec"]["template"]["metadata"]["labels"]
        assert workload["spec"]["selector"]["matchLabels"].items() <= labels.items()
        for container in spec["containers"]:
            assert container["args"][0] in commands
            env = {e["name"]: e for e in container.get("env", [])}
            assert env["PSEUDONYM_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "jamsostek-secrets"  # never inline
            assert set(env) <= fields
            ports = {p["name"]: p["containerPort"] for p in container["ports"]}
            # every workload has both probes, on the paths the process serves (docs/contract.md)
            assert container["livenessProbe"]["httpGet"]["path"] == "/livez"
            assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
            for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
                if probe in container:
                    assert container[probe]["httpGet"]["port"] in ports
        # some Service selects these pods and names only ports they have
        service = next(s for s in services if s["spec"]["selector"].items() <= labels.items())
        assert {p["targetPort"] for p in service["spec"]["ports"]} <= set(ports)
        # Pod Security "restricted": non-root, no privilege escalation, every capability dropped, seccomp
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        for container in spec["containers"]:
            assert container["securityContext"]["allowPrivilegeEscalation"] is False
            assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
        # a disruption budget covers the pods
        assert any(d["kind"] == "PodDisruptionBudget" and d["spec"]["selector"]["matchLabels"].items() <= labels.items()
                   for d in docs)
    worker = next(d for d in docs if d["kind"] == "StatefulSet")
    # a StatefulSet's serviceName must name a headless Service that selects its pods
    governing = next(s for s in services if s["metadata"]["name"] == worker["spec"]["serviceName"])
    assert governing["spec"]["clusterIP"] == "None"
    assert governing["spec"]["selector"].items() <= worker["spec"]["template"]["metadata"]["labels"].items()
    mount = next(m for m in worker["spec"]["template"]["spec"]["containers"][0]["volumeMounts"] if m["name"] == "state")
    assert mount["mountPath"] == config["data"]["STATE_DIR"]  # RocksDB state on the claimed volume
    assert worker["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == mount["name"]
    assert config["data"]["STORE"] == "rocksdb"
    monitor = next(d for d in docs if d["kind"] == "ServiceMonitor")
    selected = [s for s in services if monitor["spec"]["selector"]["matchLabels"].items() <= s["metadata"]["labels"].items()]
    assert len(selected) == 2 and all(any(p["name"] == "metrics" for p in s["spec"]["ports"]) for s in selected)


@pytest.mark.parametrize("process", ["worker", "sink"])
def test_promtool_lints_each_process_exposition_clean_but_for_the_deprecated_quota_gauge(process):
    """`promtool check metrics` on what each process serves, with every labelled series present: its only
    complaint is the deprecated `jamsostek_region_quota_total` (docs/contract.md), kept for old dashboards."""
    from prometheus_client import generate_latest

    from streams import metrics
    metrics.publish_region({"code": "64.72", "registered": 3, "active": 2, "coverage_ratio": 0.5, "stalled": True,
                            "quota": {"APBD_PROVINCE": {"total": 5, "used": 2}},
                            "alerts": [{"kind": "NO_REGISTRATIONS", "severity": "WARNING", "since": "2025-03-01"}]})
    registry = metrics.WORKER_REGISTRY if process == "worker" else metrics.SINK_REGISTRY
    done = subprocess.run([tool("promtool"), "check", "metrics"], input=generate_latest(registry).decode(),
                          capture_output=True, text=True, timeout=60)
    complaints = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    if process == "worker":
        assert complaints == ['jamsostek_region_quota_total non-counter metrics should not have "_total" suffix']
    else:
        assert complaints == [] and done.returncode == 0


KUBERNETES_VERSION = "1.33"


def test_every_k8s_manifest_is_valid_against_offline_schemas():
    """Strict validation (unknown fields are errors) of everything `kubectl apply -k deploy/k8s` applies, plus the
    example Secret: core kinds against the Kubernetes OpenAPI schemas that the PyPI package kubernetes-validate
    ships (no network), ServiceMonitor and PrometheusRule against deploy/k8s/schemas."""
    import json

    import jsonschema
    import kubernetes_validate
    docs = k8s_documents() + [d for d in yaml.safe_load_all((DEPLOY / "k8s" / "secret.example.yaml").read_text())
                              if d]
    custom = {kind: json.loads((DEPLOY / "k8s" / "schemas" / f"{kind.lower()}.json").read_text())
              for kind in ("ServiceMonitor", "PrometheusRule")}
    checked = 0
    for doc in docs:
        if doc["kind"] in custom:
            jsonschema.validate(doc, custom[doc["kind"]], format_checker=jsonschema.FormatChecker())
        else:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        checked += 1
    assert checked == len(docs) >= 10


def test_the_strict_validators_reject_what_a_cluster_would():
    """The validators really are strict: a misspelled field or a wrong type fails, for core and custom kinds."""
    import copy
    import json

    import jsonschema
    import kubernetes_validate
    docs = k8s_documents()
    worker = copy.deepcopy(next(d for d in docs if d["kind"] == "StatefulSet"))
    worker["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {"httpGet": {"path": "/readyz"}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(worker, KUBERNETES_VERSION, strict=True)
    rule = copy.deepcopy(next(d for d in docs if d["kind"] == "PrometheusRule"))
    rule["spec"]["groups"][0]["rules"][0]["for"] = "one minute"
    schema = json.loads((DEPLOY / "k8s" / "schemas" / "prometheusrule.json").read_text())
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(rule, schema)


def test_the_prometheus_rule_object_carries_the_rule_file():
    """The Operator ignores plain rule files: deploy/k8s/prometheusrule.yaml has exactly the groups of the rule file
    promtool checks and unit-tests (regenerate: python scripts/prometheusrule.py)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("prometheusrule", PROJECT_ROOT / "scripts" / "prometheusrule.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    shipped = yaml.safe_load((DEPLOY / "k8s" / "prometheusrule.yaml").read_text())
    assert shipped == module.prometheus_rule()


def test_alertmanager_inhibits_falling_coverage_while_a_critical_stall_fires_in_that_region(tmp_path):
    """The real Alertmanager (Debian's) with deploy/alertmanager/alertmanager.yml, on loopback: RegionStalled now
    carries the rule's severity (from jamsostek_region_alert_firing), so the inhibit rule matches what Prometheus
    sends: a critical stall in 64.11 mutes CoverageBelowTarget there; a warning-level stall in 64.72 does not."""
    import json
    import urllib.request

    from streams.launcher.process import free_port
    from tests.helpers import wait_for
    binary = tool("prometheus-alertmanager")
    port = free_port()
    proc = subprocess.Popen([binary, f"--config.file={DEPLOY / 'alertmanager' / 'alertmanager.yml'}",
                             f"--storage.path={tmp_path}", f"--web.listen-address=127.0.0.1:{port}",
                             "--cluster.listen-address="], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}/api/v2"

    def up() -> bool:
        try:
            return urllib.request.urlopen(f"{base}/status", timeout=2).status == 200
        except OSError:
            return False
    try:
        wait_for(up, 60, "Alertmanager to answer")
        sent = [{"alertname": "RegionStalled", "region": "64.11", "kind": "CONTRIBUTIONS_STOPPED", "severity": "critical"},
                {"alertname": "CoverageBelowTarget", "region": "64.11", "severity": "info"},
                {"alertname": "RegionStalled", "region": "64.72", "kind": "NO_REGISTRATIONS", "severity": "warning"},
                {"alertname": "CoverageBelowTarget", "region": "64.72", "severity": "info"}]
        body = json.dumps([{"labels": labels} for labels in sent]).encode()
        request = urllib.request.Request(f"{base}/alerts", data=body, headers={"Content-Type": "application/json"})
        assert urllib.request.urlopen(request, timeout=10).status == 200

        def inhibited() -> dict | None:
            alerts = json.loads(urllib.request.urlopen(f"{base}/alerts", timeout=5).read())
            if len(alerts) < len(sent):
                return None
            return {(a["labels"]["alertname"], a["labels"]["region"]): bool(a["status"]["inhibitedBy"])
                    for a in alerts}
        state = wait_for(inhibited, 60, "the alerts to be listed")
        assert state == {("RegionStalled", "64.11"): False, ("CoverageBelowTarget", "64.11"): True,
                         ("RegionStalled", "64.72"): False, ("CoverageBelowTarget", "64.72"): False}
    finally:
        proc.terminate()
        proc.wait(30)
