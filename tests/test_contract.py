"""schemas/avro agrees with the contract the project owns (docs/contract.md): every required field is there, every
other field has a default (the rules ../shared's checker applied, now against the project's own copy, so they run
in every clone), and the worker's code keeps to the flow schemas -> streams -> sinks."""
from streams.config import PROJECT_ROOT
from streams.serde import contract_schemas


def contract_required_fields() -> dict[str, set[str]]:
    """The required fields docs/contract.md lists per record (its "Avro records" section)."""
    import re
    text = (PROJECT_ROOT / "docs" / "contract.md").read_text()
    section = text.split("## Avro records", 1)[1].split("\n## ", 1)[0]
    out = {}
    for item in re.split(r"\n- ", section)[1:]:
        name, _, rest = item.split("\n\n", 1)[0].partition(":")  # an item ends at a blank line
        out[name.strip("` ")] = set(re.findall(r"`([a-z][a-z_]*)`", rest))  # field names: lower snake case
    return out


def test_the_schemas_carry_every_field_docs_contract_requires():
    schemas = contract_schemas()
    for name, fields in contract_required_fields().items():
        assert fields, name
        assert fields <= {f["name"] for f in schemas[name]["fields"]}, (name, fields)


def test_every_non_required_field_has_a_default():
    required = {
        "Registration": {"event_id", "occurred_at", "nik", "region_code", "segment", "cohort", "occupation",
                         "funding_source", "programs"},
        "Contribution": {"event_id", "occurred_at", "nik", "region_code", "period", "amount_idr", "funding_source"},
        "Claim": {"event_id", "occurred_at", "nik", "region_code", "program", "amount_idr", "status"},
        "RegionAlert": {"alert_id", "region_code", "kind", "status", "occurred_at", "started_at"},
    }
    schemas = contract_schemas()
    assert set(schemas) == set(required)
    for name, schema in schemas.items():
        fields = {f["name"]: f for f in schema["fields"]}
        assert required[name] <= set(fields)
        for fname, field in fields.items():
            assert fname in required[name] or "default" in field, f"{name}.{fname} needs a default"
        assert schema["name"] == f"id.kaltim.jamsostek.{name}"


def test_the_stream_worker_does_not_import_the_sinks():
    """The flow is schemas -> streams -> sinks: the worker publishes to topics and never calls a sink (the alert
    webhook is a sink of the alerts topic). Not even the command line: the sink's commands are a plugin (below)."""
    import ast
    offenders = []
    for path in sorted((PROJECT_ROOT / "streams").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            offenders += [f"{path.relative_to(PROJECT_ROOT)}: {n}" for n in names if n.split(".")[0] == "sinks"]
    assert offenders == []


def test_the_sink_s_commands_come_from_its_installed_plugin():
    """`jamsostek sink` and `jamsostek migrate` are added by the entry point sinks/ declares (pyproject.toml), the
    same commands as sinks/cli.py defines, after the worker's own."""
    import tomllib

    from sinks import cli as sink_cli
    from streams.cli import app
    from streams.commands import PLUGIN_GROUP
    declared = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]["entry-points"][PLUGIN_GROUP]
    assert declared == {"warehouse": "sinks.cli:register"}
    names = [c.name or c.callback.__name__ for c in app.registered_commands]
    assert names[-2:] == ["migrate", "sink"] and len(set(names)) == len(names)
    assert [c.callback for c in app.registered_commands[-2:]] == [c.callback for c in
                                                                   sink_cli.commands.registered_commands]


def test_only_faust_fixes_touches_faust_private_names():
    """Every patch of Faust or mode lives in streams/faust_fixes.py: no other module imports a private name from
    them or reads a private attribute of an app, consumer, producer, stream, event, table or topic."""
    import ast
    import re
    private_attr = re.compile(r"\b(app|consumer|producer|stream|event|table|topic|tables)\w*\._[a-z]")
    offenders = []
    for root in ("streams", "sinks"):
        for path in sorted((PROJECT_ROOT / root).rglob("*.py")):
            if path.name == "faust_fixes.py":
                continue
            text = path.read_text()
            for node in ast.walk(ast.parse(text)):
                if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in ("faust", "mode"):
                    offenders += [f"{path.name}: {node.module}.{a.name}" for a in node.names
                                  if a.name.startswith("_")]
            offenders += [f"{path.name}: {m.group(0)}" for m in private_attr.finditer(text)]
    assert offenders == []
