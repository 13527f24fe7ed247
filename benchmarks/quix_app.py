"""The peer: the same per-region aggregates with Quix Streams and its RocksDB state, written the Quix way
(StreamingDataFrame, stateful ``apply``, ``group_by`` through a repartition topic). Runs in its own virtualenv
(Quix Streams pins an older confluent-kafka than the project): `python quix_app.py CONFIG.json`.

Stage 1, keyed by NIK: de-duplicate event ids, registration, paid-through month → deltas.
Stage 2, keyed by region: registered and paid-through histogram per cohort, contributions, claims, clock →
the region's state to the output topic after every update (as our region table's changelog does)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from quixstreams import Application
from quixstreams.models.serializers.avro import AvroDeserializer
from quixstreams.models.serializers.schema_registry import SchemaRegistryClientConfig

# the calendar of the independent fold (standard library only, so it loads in this virtualenv too)
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.expected import month_number, period_number  # noqa: E402

SEEN = 64  # event ids remembered per participant


def tagged(value: dict, kind: str) -> dict:
    """The record with its kind; Confluent's Avro deserializer gives timestamp-millis as datetime: back to ms."""
    at = value["occurred_at"]
    return {**value, "kind": kind, "occurred_at": at if isinstance(at, int) else int(at.timestamp() * 1000)}


def participant(value: dict, state) -> list[dict]:
    kind, at = value["kind"], value["occurred_at"]
    p = state.get("p") or {"seen": [], "reg": False, "region": None, "cohort": None, "paid": 0, "since": 0}
    if value["event_id"] in p["seen"]:
        return []
    p["seen"] = (p["seen"] + [value["event_id"]])[-SEEN:]
    out = []
    if kind == "Registration" and not p["reg"]:
        p.update(reg=True, region=value["region_code"], cohort=value["cohort"], since=month_number(at) - 1)
        out.append({"k": "reg", "region": p["region"], "cohort": p["cohort"], "pt": max(p["paid"], p["since"]), "at": at})
        if p.get("dead"):  # the death benefit came first: registered, not a member
            out.append({"k": "exit", "region": p["region"], "cohort": p["cohort"], "pt": max(p["paid"], p["since"]),
                        "at": at})
    elif kind == "Registration" and p["cohort"] == "VULNERABLE_WORKER" and value["segment"] == "PU" \
            and not (p.get("dead") or p.get("moved")):
        p["moved"] = True  # a wage job ends the sponsored place (as ours: docs/domain.md)
        out.append({"k": "exit", "region": p["region"], "cohort": p["cohort"], "pt": max(p["paid"], p["since"]),
                    "at": at})
    elif kind == "Contribution":
        before = max(p["paid"], p["since"])
        p["paid"] = max(p["paid"], period_number(value["period"]))
        if p["reg"] and not (p.get("dead") or p.get("moved")) and max(p["paid"], p["since"]) != before:
            out.append({"k": "pt", "region": p["region"], "cohort": p["cohort"], "from": before,
                        "to": max(p["paid"], p["since"]), "at": at})
        out.append({"k": "contrib", "region": value["region_code"], "amount": value["amount_idr"], "at": at})
    elif kind == "Claim":
        out.append({"k": "claim", "region": value["region_code"], "program": value["program"],
                    "status": value["status"], "amount": value["amount_idr"], "at": at})
        death = value["program"] == "JKM" or (value["program"] == "JKK" and value.get("death"))
        if value["status"] == "PAID" and death and not p.get("dead"):
            p["dead"] = True  # a paid death benefit ends participation (as ours: docs/domain.md)
            if p["reg"] and not p.get("moved"):
                out.append({"k": "exit", "region": p["region"], "cohort": p["cohort"],
                            "pt": max(p["paid"], p["since"]), "at": at})
    state.set("p", p)
    return out


def region(delta: dict, state) -> dict:
    r = state.get("r") or {"code": delta["region"], "reg": {}, "pt": {}, "contrib": [0, 0], "claims": {}, "clock": 0}
    k = delta["k"]
    if k == "reg":
        r["reg"][delta["cohort"]] = r["reg"].get(delta["cohort"], 0) + 1
        hist = r["pt"].setdefault(delta["cohort"], {})
        hist[str(delta["pt"])] = hist.get(str(delta["pt"]), 0) + 1
    elif k == "pt":
        hist = r["pt"].setdefault(delta["cohort"], {})
        hist[str(delta["from"])] -= 1
        hist[str(delta["to"])] = hist.get(str(delta["to"]), 0) + 1
    elif k == "exit":
        hist = r["pt"].setdefault(delta["cohort"], {})
        hist[str(delta["pt"])] -= 1
    elif k == "contrib":
        r["contrib"][0] += 1
        r["contrib"][1] += delta["amount"]
    else:
        c = r["claims"].setdefault(delta["program"], {}).setdefault(delta["status"], [0, 0])
        c[0] += 1
        c[1] += delta["amount"]
    r["clock"] = max(r["clock"], delta["at"])
    state.set("r", r)
    return r


def main(config: dict) -> None:
    app = Application(broker_address=config["bootstrap"], consumer_group=config["group"], auto_offset_reset="earliest",
                      state_dir=config["state_dir"], loglevel="WARNING", commit_interval=1.0)
    deserializer = AvroDeserializer(schema_registry_client_config=SchemaRegistryClientConfig(url=config["registry"]))
    frames = []
    for topic, kind in config["inputs"].items():
        sdf = app.dataframe(app.topic(topic, value_deserializer=deserializer, key_deserializer="str"))
        frames.append(sdf.apply(lambda value, kind=kind: tagged(value, kind)))
    sdf = frames[0]
    for other in frames[1:]:
        sdf = sdf.concat(other)
    sdf = sdf.apply(participant, stateful=True, expand=True)
    sdf = sdf.group_by(lambda delta: delta["region"], name="region")
    sdf = sdf.apply(region, stateful=True)
    sdf.to_topic(app.topic(config["output"], value_serializer="json", key_serializer="str"))
    app.run()


if __name__ == "__main__":
    main(json.loads(open(sys.argv[1]).read()))
