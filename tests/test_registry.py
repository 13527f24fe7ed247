"""The real schema registry (Apicurio, Confluent API): stock clients publish through it, the project decodes;
incompatible changes are refused; compatible evolution works both ways; schemas live in Kafka."""
from __future__ import annotations

import copy
import json
import uuid

import pytest
import requests
from confluent_kafka import Producer
from confluent_kafka.schema_registry import Schema
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.serialization import MessageField, SerializationContext, StringSerializer

from streams.launcher import SchemaRegistry
from streams.serde import AvroSerde, RegistryUnavailable, contract_schemas, registry_client
from tests.helpers import read_all

REGISTRATION = {
    "event_id": "2f3c6d2e-8d7b-4d0a-9a43-0b3f2c1d9e10", "occurred_at": 1_740_000_000_000, "nik": "6472014107850003",
    "region_code": "64.72", "segment": "BPU", "cohort": "VULNERABLE_WORKER", "occupation": "nelayan",
    "funding_source": "APBD_PROVINCE", "programs": ["JKK", "JKM"], "channel": "DINSOS", "declared_income_idr": None,
}


def v2_registration() -> dict:
    """Registration plus one optional field, as a later contract version would add it."""
    schema = copy.deepcopy(contract_schemas()["Registration"])
    schema["fields"].append({"name": "village", "type": ["null", "string"], "default": None})
    return schema


def test_confluent_avro_serializer_publishes_and_project_decodes(settings, serde):
    """An upstream publisher with stock confluent-kafka (no project code) → the project's serde."""
    topic = settings.topics.registrations
    client = registry_client(settings.schema_registry_url)
    serializer = AvroSerializer(client, json.dumps(contract_schemas()["Registration"]))
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap_servers})
    value = serializer(REGISTRATION, SerializationContext(topic, MessageField.VALUE))
    producer.produce(topic, key=StringSerializer()(REGISTRATION["nik"]), value=value)
    producer.flush(30)

    [record] = read_all(settings.kafka_bootstrap_servers, topic, expected=1)
    assert record.value[0] == 0 and record.key == REGISTRATION["nik"].encode()
    assert serde.decode(record.value, "Registration") == REGISTRATION
    assert f"{topic}-value" in client.get_subjects()
    latest = client.get_latest_version(f"{topic}-value")
    assert int.from_bytes(record.value[1:5], "big") == latest.schema_id


def test_warm_registers_what_the_worker_produces_and_caches_what_it_consumes(settings, registry):
    """streams/serde.py ``AvroSerde.warm`` (the worker's start-up task): the alert subject registered, the latest
    writer schema of an input with records cached (its first record then decodes without asking the registry),
    inputs with none yet skipped; a registry that does not answer is ``RegistryUnavailable`` (retried)."""
    t = settings.topics
    record = AvroSerde(registry.url).encode(t.registrations, "Registration", REGISTRATION)  # an upstream publisher
    worker = AvroSerde(registry.url)
    client = registry_client(registry.url)
    assert f"{t.region_alerts}-value" not in client.get_subjects()
    ids = worker.warm({t.region_alerts: "RegionAlert"}, dict(t.inputs))
    assert f"{t.region_alerts}-value" in client.get_subjects()
    assert ids == [client.get_latest_version(f"{t.region_alerts}-value").schema_id, int.from_bytes(record[1:5], "big")]
    worker.registry = None  # any registry call from here on would raise
    assert worker.decode(record, "Registration") == REGISTRATION
    with pytest.raises(RegistryUnavailable):
        AvroSerde(registry_client("http://127.0.0.1:9", retries=0)).warm({t.region_alerts: "RegionAlert"}, [])


def test_fetch_writers_fetches_unknown_writer_schemas_off_the_event_loop(settings, registry):
    """streams/serde.py ``fetch_writers`` (ingest, per batch): each writer schema not cached yet is fetched in a
    thread, not on the loop; bad framing and unknown ids are left to ``decode`` (dead-lettered there)."""
    import asyncio
    import threading
    from streams.serde import frame
    record = AvroSerde(registry.url).encode(settings.topics.registrations, "Registration", REGISTRATION)
    serde = AvroSerde(registry.url)
    threads = []
    get_schema = serde.registry.get_schema

    def recording(schema_id, *args, **kwargs):  # the real registry call, noting where it runs
        threads.append(threading.current_thread())
        return get_schema(schema_id, *args, **kwargs)
    serde.registry.get_schema = recording

    async def batch():
        await serde.fetch_writers([record, record, b"junk", None, frame(987654, b"")])
        return threading.current_thread()
    loop_thread = asyncio.run(batch())
    assert len(threads) == 2 and loop_thread not in threads  # the record's id once, the unknown id once
    assert serde.decode(record, "Registration") == REGISTRATION and len(threads) == 2  # cached: no call


def test_incompatible_schema_is_refused(settings):
    client = registry_client(settings.schema_registry_url)
    subject = f"{settings.topics.contributions}-value"
    client.register_schema(subject, Schema(json.dumps(contract_schemas()["Contribution"]), "AVRO"))
    broken = copy.deepcopy(contract_schemas()["Contribution"])
    for field in broken["fields"]:
        if field["name"] == "amount_idr":
            field["type"] = "string"  # long -> string: old data can't be read
    broken["fields"].append({"name": "bank", "type": "string"})  # new field without a default
    assert client.test_compatibility(subject, Schema(json.dumps(broken), "AVRO")) is False
    with pytest.raises(SchemaRegistryError) as refused:
        client.register_schema(subject, Schema(json.dumps(broken), "AVRO"))
    assert refused.value.http_status_code == 409
    assert len(client.get_versions(subject)) == 1


def test_v1_consumer_reads_v2_data_and_v2_consumer_reads_v1_data(settings, registry):
    topic = settings.topics.registrations
    v1 = AvroSerde(registry.url)
    v2 = AvroSerde(registry.url, schemas={"Registration": v2_registration()})
    old = v1.encode(topic, "Registration", REGISTRATION)
    new = v2.encode(topic, "Registration", {**REGISTRATION, "village": "Loa Janan Ilir"})  # compatible: accepted
    assert old[1:5] != new[1:5]
    assert v1.decode(new, "Registration") == REGISTRATION  # the added field is ignored by the old reader
    assert v2.decode(old, "Registration") == {**REGISTRATION, "village": None}  # the new reader fills the default
    assert v2.decode(new, "Registration")["village"] == "Loa Janan Ilir"


def test_the_returned_claim_status_is_a_backward_compatible_evolution(settings, registry):
    """ClaimStatus gained RETURNED (documents missing): the registry accepts it over the previous version under its
    BACKWARD rule, the project's reader takes both old records and RETURNED ones, and a reader still on the old
    version cannot read RETURNED (so consumers are upgraded before publishers: docs/contract.md)."""
    from streams.serde import DecodeError
    previous = copy.deepcopy(contract_schemas()["Claim"])
    for field in previous["fields"]:
        if field["name"] == "status":
            field["type"]["symbols"] = [s for s in field["type"]["symbols"] if s != "RETURNED"]
    symbols = lambda schema: next(f["type"]["symbols"] for f in schema["fields"] if f["name"] == "status")  # noqa
    assert symbols(contract_schemas()["Claim"])[-1] == "RETURNED" and "RETURNED" not in symbols(previous)
    topic = settings.topics.claims
    old_reader = AvroSerde(registry.url, schemas={"Claim": previous})
    current = AvroSerde(registry.url)
    claim = {"event_id": str(uuid.uuid4()), "occurred_at": 1_750_000_000_000, "nik": "6402010101900001",
             "region_code": "64.02", "program": "JHT", "amount_idr": 10_000_000, "status": "SUBMITTED",
             "claim_id": "KLM-1"}
    old = old_reader.encode(topic, "Claim", claim)  # the previous version registered first
    returned = current.encode(topic, "Claim", {**claim, "status": "RETURNED"})  # accepted as the next version
    assert old[1:5] != returned[1:5]
    client = registry_client(registry.url)
    assert len(client.get_versions(f"{topic}-value")) == 2
    assert current.decode(old, "Claim") == {**claim, "death": None}  # a later optional field: its default
    assert current.decode(returned, "Claim")["status"] == "RETURNED"
    with pytest.raises(DecodeError):
        old_reader.decode(returned, "Claim")


def test_the_jkk_death_flag_is_an_optional_field_both_ways(settings, registry):
    """Claim gained ``death`` (a JKK work-accident death benefit), optional with a null default: registered over
    the previous version, old records read as not stated, and a reader on the old version skips the field."""
    previous = copy.deepcopy(contract_schemas()["Claim"])
    previous["fields"] = [f for f in previous["fields"] if f["name"] != "death"]
    topic = settings.topics.claims
    old_reader, current = AvroSerde(registry.url, schemas={"Claim": previous}), AvroSerde(registry.url)
    claim = {"event_id": str(uuid.uuid4()), "occurred_at": 1_750_000_000_000, "nik": "6402010101900001",
             "region_code": "64.02", "program": "JKK", "amount_idr": 48_000_000, "status": "PAID",
             "claim_id": "KLM-9"}
    old = old_reader.encode(topic, "Claim", claim)
    new = current.encode(topic, "Claim", {**claim, "death": True})
    assert current.decode(old, "Claim")["death"] is None and current.decode(new, "Claim")["death"] is True
    assert "death" not in old_reader.decode(new, "Claim")


def with_funders(schema: dict, symbols: list[str], default: str | None) -> dict:
    """``schema`` with its FundingSource enum replaced (``default``: the reader's symbol for unknown ones)."""
    schema = copy.deepcopy(schema)
    for field in schema["fields"]:
        if field["name"] == "funding_source":
            field["type"]["symbols"] = symbols
            field["type"].pop("default", None)
            if default:
                field["type"]["default"] = default
    return schema


def test_funders_evolve_compatibly_and_the_next_funder_reads_as_other(settings, registry):
    """FundingSource gained DBH, CSR, APBDES and a default symbol (OTHER) over the four-symbol version: the registry
    accepts it under BACKWARD, the project reads old records and the new funders; an old reader cannot read DBH
    (consumers upgrade first, as for RETURNED); and thanks to the default, a funder added after this version
    reaches today's reader as OTHER instead of failing it."""
    from streams.serde import DecodeError
    current_schema = contract_schemas()["Registration"]
    funders = next(f["type"] for f in current_schema["fields"] if f["name"] == "funding_source")
    assert funders["symbols"][:4] == ["APBD_PROVINCE", "APBD_REGENCY", "EMPLOYER", "SELF"]
    assert {"DBH", "CSR", "APBDES"} <= set(funders["symbols"]) and funders["default"] == "OTHER"
    previous = with_funders(current_schema, funders["symbols"][:4], None)
    following = with_funders(current_schema, [*funders["symbols"], "ZAKAT"], "OTHER")  # e.g. BAZNAS zakat funds
    topic = settings.topics.registrations
    old_reader, current = AvroSerde(registry.url, schemas={"Registration": previous}), AvroSerde(registry.url)
    later = AvroSerde(registry.url, schemas={"Registration": following})
    old = old_reader.encode(topic, "Registration", REGISTRATION)
    dbh = current.encode(topic, "Registration", {**REGISTRATION, "funding_source": "DBH"})
    zakat = later.encode(topic, "Registration", {**REGISTRATION, "funding_source": "ZAKAT"})
    client = registry_client(registry.url)
    assert len(client.get_versions(f"{topic}-value")) == 3
    assert current.decode(old, "Registration") == REGISTRATION
    assert current.decode(dbh, "Registration")["funding_source"] == "DBH"
    assert current.decode(zakat, "Registration")["funding_source"] == "OTHER"
    with pytest.raises(DecodeError):
        old_reader.decode(dbh, "Registration")


def test_compatibility_endpoint_and_global_backward_rule(registry):
    assert requests.get(f"{registry.url}/config", timeout=10).json()["compatibilityLevel"] == "BACKWARD"


@pytest.mark.slow
def test_schemas_live_in_kafka_and_survive_a_new_registry_process(settings, registry, kafka, tmp_path):
    serde = AvroSerde(registry.url)
    value = serde.encode(settings.topics.claims, "Claim", {
        "event_id": str(uuid.uuid4()), "occurred_at": 1_750_000_000_000, "nik": "6402010101900001",
        "region_code": "64.02", "program": "JKM", "amount_idr": 42_000_000, "status": "PAID", "claim_id": None})
    other = SchemaRegistry.start_new(tmp_path / "second", bootstrap=kafka.bootstrap, cache_dir=registry.cache_dir,
                                     version=registry.version)
    try:
        fresh = AvroSerde(other.url)
        assert fresh.decode(value, "Claim")["amount_idr"] == 42_000_000
        assert f"{settings.topics.claims}-value" in fresh.registry.get_subjects()
    finally:
        other.stop()
