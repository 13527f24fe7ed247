"""The serde against the real registry: round trips, every decode failure has a reason, fuzzed bytes never escape
as anything but DecodeError."""
from __future__ import annotations

import uuid

import pytest
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from streams.serde import AvroSerde, DecodeError, RegistryUnavailable, frame, unframe

CONTRIBUTION = {"event_id": str(uuid.uuid4()), "occurred_at": 1_735_700_000_000, "nik": "6408015506920001",
                "region_code": "64.08", "period": "2025-01", "amount_idr": 16_800, "funding_source": "APBD_PROVINCE"}
CLAIM = {"event_id": str(uuid.uuid4()), "occurred_at": 1_735_800_000_000, "nik": "6408015506920001",
         "region_code": "64.08", "program": "JKK", "amount_idr": 7_250_000, "status": "APPROVED", "claim_id": "c-1",
         "death": False}
ALERT = {"alert_id": "64.11:NO_REGISTRATIONS:1", "region_code": "64.11", "kind": "NO_REGISTRATIONS",
         "status": "FIRING", "severity": "CRITICAL", "occurred_at": 1_740_000_000_000, "started_at": 1_740_000_000_000,
         "resolved_at": None, "summary": "no registrations for 14 days", "details": {"quota_remaining": "412"}}


@pytest.mark.parametrize("name,record", [("Contribution", CONTRIBUTION), ("Claim", CLAIM), ("RegionAlert", ALERT)])
def test_round_trip(serde, settings, name, record):
    data = serde.encode(f"{settings.topic_prefix}x", name, record)
    assert data[0] == 0
    assert serde.decode(data, name) == record


def test_framing_errors(serde):
    for data in (None, b"", b"\x00\x00\x00", b"\x01" + b"\x00" * 10):
        with pytest.raises(DecodeError) as err:
            serde.decode(data, "Claim")
        assert err.value.reason == "bad_framing"


def test_a_registry_that_never_answers_is_unavailable_not_a_hang():
    """streams/serde.py ``registry_client``: every request is bounded (the client's default waits forever; a
    request Apicurio never answered once held a test for its whole time limit). A server on loopback that accepts
    and never replies: the lookup gives up after the timeout and the client's retries, as ``RegistryUnavailable``
    (which the worker retries), instead of blocking its caller."""
    import socket
    import time
    from streams.serde import registry_client
    with socket.create_server(("127.0.0.1", 0)) as silent:  # the kernel accepts; nobody ever reads or answers
        silent.listen(16)
        serde = AvroSerde(registry_client(f"http://127.0.0.1:{silent.getsockname()[1]}", timeout=0.3, retries=1))
        started = time.monotonic()
        with pytest.raises(RegistryUnavailable):
            serde.writer_schema(1)
        assert time.monotonic() - started < 10  # two attempts of 0.3 s and a backoff (≤ 1 s jittered)


def test_unknown_schema_id(registry):
    """Dead-lettered as ``unknown_schema_id``; the registry is asked once per id within ``unknown_seconds``
    (ingest's prefetch, then its decode, then every other record with that id), and again after."""
    import asyncio
    import time
    serde = AvroSerde(registry.url, unknown_seconds=1.0)
    asked = []
    get_schema = serde.registry.get_schema

    def counting(schema_id, *args, **kwargs):  # the real registry call, counted
        asked.append(schema_id)
        return get_schema(schema_id, *args, **kwargs)
    serde.registry.get_schema = counting
    record = frame(2_000_000_000, b"\x02")
    asyncio.run(serde.fetch_writers([record]))
    for _ in range(3):
        with pytest.raises(DecodeError) as err:
            serde.decode(record, "Claim")
        assert err.value.reason == "unknown_schema_id"
    assert asked == [2_000_000_000]
    time.sleep(1.1)
    with pytest.raises(DecodeError):
        serde.decode(record, "Claim")
    assert asked == [2_000_000_000] * 2


def test_truncated_body_and_trailing_bytes(serde, settings):
    data = serde.encode(f"{settings.topic_prefix}x", "Claim", CLAIM)
    for broken in (data[:-5], data[:7], data + b"\x00\x01"):
        with pytest.raises(DecodeError) as err:
            serde.decode(broken, "Claim")
        assert err.value.reason == "avro_decode"


def test_record_of_another_type_is_a_schema_mismatch(serde, settings):
    data = serde.encode(f"{settings.topic_prefix}x", "Contribution", CONTRIBUTION)
    with pytest.raises(DecodeError) as err:
        serde.decode(data, "Claim")
    assert err.value.reason == "schema_mismatch"


def test_registry_down_is_transient_not_a_dead_letter():
    serde = AvroSerde("http://127.0.0.1:9/apis/ccompat/v7")  # nothing listens on port 9
    with pytest.raises(RegistryUnavailable):
        serde.decode(frame(1, b"\x00"), "Claim")


def test_unframe_reads_big_endian_id():
    schema_id, body = unframe(b"\x00\x00\x01\x02\x03abc")
    assert schema_id == 0x010203 and bytes(body) == b"abc"


@hsettings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=64), st.sampled_from(["Registration", "Contribution", "Claim"]))
def test_fuzzed_bytes_only_ever_raise_decode_error(serde, settings, tail, name):
    valid = serde.encode(f"{settings.topic_prefix}fz-{name}", name, {
        "Registration": {"event_id": "e", "occurred_at": 0, "nik": "n", "region_code": "r", "segment": "PU",
                         "cohort": "GENERAL", "occupation": "o", "funding_source": "SELF", "programs": []},
        "Contribution": CONTRIBUTION, "Claim": CLAIM}[name])
    for data in (tail, valid[:5] + tail, valid[: len(tail) % len(valid)] + tail):
        try:
            record = serde.decode(data, name)
        except DecodeError as exc:
            assert exc.reason in {"bad_framing", "unknown_schema_id", "avro_decode", "schema_mismatch"}
        else:
            assert isinstance(record, dict)


@hsettings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.fixed_dictionaries({
    "event_id": st.uuids().map(str), "occurred_at": st.integers(0, 2**62), "nik": st.text(max_size=40),
    "region_code": st.text(max_size=10), "period": st.text(max_size=10), "amount_idr": st.integers(-2**63, 2**63 - 1),
    "funding_source": st.sampled_from(["APBD_PROVINCE", "APBD_REGENCY", "EMPLOYER", "SELF"])}))
def test_any_schema_valid_contribution_round_trips(serde, settings, record):
    data = serde.encode(f"{settings.topic_prefix}fz", "Contribution", record)
    assert serde.decode(data, "Contribution") == record
