"""10,000 hostile records on the real input topics: the worker neither crashes nor loses any. Every record is
accounted for (consumed = processed + duplicate + dead-lettered), every dead letter carries its reason, and the
reasons are the ones each kind of damage deserves."""
from __future__ import annotations

import collections
import random
import uuid

from confluent_kafka import Producer

from streams.config import Settings
from streams.serde import AvroSerde, frame
from streams.topics import ensure_topics
from tests.conftest import unique
from tests.helpers import read_all
from tests.worker import Worker

N = 10_000
DAY = 86_400_000
T0 = 1_740_000_000_000  # 2025-02-19


def nik(rng: random.Random) -> str:
    return "6472" + "".join(rng.choice("0123456789") for _ in range(12))


def valid(rng: random.Random, kind: str, person: str, at: int) -> dict:
    base = {"event_id": str(uuid.uuid4()), "occurred_at": at, "nik": person, "region_code": "64.72"}
    if kind == "Registration":
        return {**base, "cohort": "VULNERABLE_WORKER", "segment": "BPU", "funding_source": "APBD_PROVINCE",
                "programs": ["JKK", "JKM"], "occupation": "Nelayan"}
    if kind == "Contribution":
        return {**base, "period": "2025-02", "amount_idr": 16_800, "funding_source": "APBD_PROVINCE"}
    return {**base, "program": "JKK", "amount_idr": 1_000_000, "status": "SUBMITTED", "claim_id": str(uuid.uuid4())}


def hostile_records(settings: Settings, serde: AvroSerde) -> list[tuple[str, bytes | None, bytes | None, str]]:
    """(topic, key, value, expected outcome): 'processed', 'duplicate' or a dead-letter reason."""
    rng = random.Random(2024)
    topics = {name: topic for topic, name in settings.topics.inputs.items()}
    out = []

    def enc(kind, record):
        return serde.encode(topics[kind], kind, record)

    damages = ["truncated", "magic", "unknown_id", "garbage_body", "trailing", "empty", "null", "wrong_type",
               "huge_text", "huge_value", "nik", "region", "amount", "period", "future", "ancient", "event_id",
               "programs", "storm", "valid"]
    storm = None
    while len(out) < N:
        damage = rng.choice(damages)
        kind = rng.choice(["Registration", "Contribution", "Claim"])
        person = nik(rng)
        record = valid(rng, kind, person, T0 + rng.randrange(0, 20 * DAY))
        topic, key = topics[kind], person.encode()
        good = enc(kind, record)
        if damage == "truncated":
            out.append((topic, key, good[:rng.randrange(5, len(good))], "avro_decode"))
        elif damage == "magic":
            out.append((topic, key, bytes([rng.randrange(1, 256)]) + good[1:], "bad_framing"))
        elif damage == "unknown_id":
            out.append((topic, key, frame(rng.randrange(10**6, 2**31 - 1), good[5:]), "unknown_schema_id"))
        elif damage == "garbage_body":
            out.append((topic, key, good[:5] + b"\xff" * rng.randrange(1, 40), "avro_decode"))
        elif damage == "trailing":
            out.append((topic, key, good + b"\x00\x01", "avro_decode"))
        elif damage == "empty":
            out.append((topic, key, b"", "bad_framing"))
        elif damage == "null":
            out.append((topic, None, None, "bad_framing"))
        elif damage == "wrong_type":  # a record of another type, with its own (registered) schema id
            other = "Claim" if kind != "Claim" else "Contribution"
            out.append((topic, key, enc(other, valid(rng, other, person, record["occurred_at"])), "schema_mismatch"))
        elif damage == "huge_text" and kind == "Registration":
            out.append((topic, key, enc(kind, {**record, "occupation": "x" * 200_000}), "invalid_text"))
        elif damage == "huge_value":  # 300 kB of string where a UUID belongs
            out.append((topic, key, enc(kind, {**record, "event_id": "y" * 300_000}), "invalid_event_id"))
        elif damage == "nik":
            out.append((topic, key, enc(kind, {**record, "nik": rng.choice(["", "123", person + "0", "64720x" + "0" * 10,
                                                                             "６４７２" + person[4:]])}), "invalid_nik"))
        elif damage == "region":
            out.append((topic, key, enc(kind, {**record, "region_code": rng.choice(["64.10", "", "6472", "' OR 1=1"])}),
                        "unknown_region"))
        elif damage == "amount" and kind != "Registration":
            out.append((topic, key, enc(kind, {**record, "amount_idr": -rng.randrange(1, 10**12)}), "negative_amount"))
        elif damage == "period" and kind == "Contribution":
            out.append((topic, key, enc(kind, {**record, "period": rng.choice(["2025-13", "2025-1", "25-01", ""])}),
                        "invalid_period"))
        elif damage == "future":
            out.append((topic, key, enc(kind, {**record, "occurred_at": 4_102_444_800_000}), "invalid_timestamp"))
        elif damage == "ancient":
            out.append((topic, key, enc(kind, {**record, "occurred_at": rng.choice([0, 631_152_000_000])}),
                        "invalid_timestamp"))
        elif damage == "event_id":
            out.append((topic, key, enc(kind, {**record, "event_id": "not-a-uuid"}), "invalid_event_id"))
        elif damage == "programs" and kind == "Registration":
            out.append((topic, key, enc(kind, {**record, "programs": ["JKK", "JKK"]}), "invalid_programs"))
        elif damage == "storm":  # one valid record published 200 times
            if storm is None or storm[0] != topic:
                storm = (topic, key, good)
                out.append((topic, key, good, "processed"))
            out.extend((storm[0], storm[1], storm[2], "duplicate") for _ in range(199))
        elif damage == "valid":
            out.append((topic, key, good, "processed"))
    return out[:N]


def test_ten_thousand_hostile_records_are_all_accounted_for(settings, serde, tmp_path):
    settings = settings.model_copy(update={"app_id": unique("app-")})
    ensure_topics(settings)
    records = hostile_records(settings, serde)
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap_servers, "message.max.bytes": 2_000_000})
    for topic, key, value, _ in records:
        producer.produce(topic, key=key, value=value)
        producer.poll(0)
    assert producer.flush(60) == 0
    want = collections.Counter(outcome for *_, outcome in records)
    worker = Worker(settings, tmp_path / "worker.log")
    try:
        worker.start()
        worker.wait(lambda: sum(worker.events_accounted().values()) >= N, 240, "every hostile record accounted")
        assert worker.proc.poll() is None, "the worker survived"
        accounted = worker.events_accounted()
        dead = {k: v for k, v in want.items() if k not in ("processed", "duplicate")}
        assert accounted == {"processed": want["processed"], "duplicate": want["duplicate"],
                             "dead_letter": sum(dead.values())}
        reasons = {dict(labels)["reason"]: value for (name, labels), value in worker.metrics().items()
                   if name == "jamsostek_dead_letter_total"}
        assert reasons == dead  # every damage got its own reason; none fell through to 'processing_error'
        letters = read_all(settings.kafka_bootstrap_servers, settings.topics.dead_letter, expected=sum(dead.values()))
        assert len(letters) == sum(dead.values())
        assert collections.Counter(dict(d.headers)["dlq.reason"].decode() for d in letters) == dead
        assert "Traceback" not in worker.log.read_text()
    finally:
        worker.stop()
