"""Production mode refuses to pseudonymise NIKs with the development key; a configured key is used instead."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from streams import rules
from streams.config import DEV_PSEUDONYM_KEY, Settings


@pytest.mark.parametrize("command", ["worker", "sink"])
def test_production_mode_refuses_to_start_without_a_key(command, tmp_path):
    env = {**os.environ, "MODE": "production", "STATE_DIR": str(tmp_path), "PSEUDONYM_KEY": "",
           "WAREHOUSE_URL": f"sqlite:///{tmp_path / 'w.db'}", "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1"}
    done = subprocess.run([sys.executable, "-m", "streams.cli", command], env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 1
    assert "PSEUDONYM_KEY must be set in production mode" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_configured_key_changes_every_pseudonym():
    nik = "6472014107850003"
    production = Settings(mode="production", pseudonym_key="a-long-random-secret")
    assert production.pseudonym_key_bytes() == b"a-long-random-secret"
    assert rules.participant_key(nik, production.pseudonym_key_bytes()) != rules.participant_key(nik, DEV_PSEUDONYM_KEY)
    assert nik not in rules.participant_key(nik, DEV_PSEUDONYM_KEY)
    assert "a-long-random-secret" not in repr(production)  # secrets do not leak through logs of the settings


# -- NIKs typed into free text -------------------------------------------------------------------------------------
PLANTED = "6472015508900417"


@pytest.mark.parametrize("text, clean", [
    (f"nelayan, NIK {PLANTED}", "nelayan, NIK [NIK]"),
    ("petani 6472 0155 0890 0417 ok", "petani [NIK] ok"),
    ("64.72.01-550890-0417", "[NIK]"),
    (f"NIK:{PLANTED}x", "NIK:[NIK]x"),
    (f"{PLANTED}{PLANTED}", "[NIK]"),  # two run together: gone whole
    (f"{PLANTED}123", "[NIK]"),  # a typo'd longer run too
    ("guru ngaji", "guru ngaji"),
    ("Rp 16.800 x 12 bulan, 64.72", "Rp 16.800 x 12 bulan, 64.72"),  # figures and region codes stay
    ("647201550890041", "647201550890041"),  # 15 digits is not a NIK
    ("0812-3456-7890", "0812-3456-7890"),  # a phone number stays
])
def test_scrub_replaces_every_nik_like_run_and_nothing_else(text, clean):
    from streams.privacy import scrub
    assert scrub(text)[0] == clean


def test_every_unchecked_string_field_of_the_contract_is_scrubbed():
    """A schema that gains a string field must say whether it is validated or free text (then scrubbed)."""
    from streams.privacy import FREE_TEXT, VALIDATED
    from streams.serde import contract_schemas

    def is_string(t) -> bool:
        return t == "string" or (isinstance(t, list) and "string" in t)
    for name, schema in contract_schemas().items():
        if name not in ("Registration", "Contribution", "Claim"):
            continue
        strings = {f["name"] for f in schema["fields"] if is_string(f["type"])}
        assert strings - set(VALIDATED) == set(FREE_TEXT[name]), name


def test_log_records_are_scrubbed_as_they_are_made(caplog):
    import logging

    from streams import privacy
    from streams.metrics import NIK_REDACTED
    before = NIK_REDACTED.labels("log")._value.get()
    original = logging.getLogRecordFactory()
    try:
        privacy.install_log_scrubber()
        privacy.install_log_scrubber()  # idempotent: one wrapper
        assert logging.getLogRecordFactory().previous is original
        log = logging.getLogger("test.privacy")
        with caplog.at_level(logging.INFO, logger="test.privacy"):
            log.info("occupation was %r", f"tukang ojek {PLANTED}")
            try:
                raise ValueError(f"cannot parse {PLANTED}")
            except ValueError:
                log.exception("failed")
    finally:
        logging.setLogRecordFactory(original)
    text = caplog.text
    assert PLANTED not in text and "tukang ojek [NIK]" in text and "cannot parse [NIK]" in text
    assert NIK_REDACTED.labels("log")._value.get() - before == 2


def test_a_scrubbed_record_formats_through_the_workers_log_formatter():
    """Faust's workers format records with mode's ExtensionFormatter, which turns ``args`` None into (None,): a
    scrubbed record must still format there (the 200k drill logged 1,392 "Logging error" tracebacks for
    Faust's "producer flush took 0.…" lines, whose 16 fractional digits the scrubber replaced)."""
    import io
    import logging

    from mode.utils.logging import ExtensionFormatter

    from streams import privacy

    class Recording(logging.StreamHandler):
        errors: list = []

        def handleError(self, record):
            self.errors.append(record)
    out = io.StringIO()
    handler = Recording(out)
    handler.setFormatter(ExtensionFormatter(stream=out, fmt="%(message)s"))
    log = logging.getLogger("test.privacy.mode")
    log.addHandler(handler)
    log.propagate = False
    original = logging.getLogRecordFactory()
    try:
        privacy.install_log_scrubber()
        log.warning(f"producer flush took {0.1234567890123456}")
        log.warning("owner %s", PLANTED)
    finally:
        logging.setLogRecordFactory(original)
        log.removeHandler(handler)
    assert handler.errors == [] and out.getvalue().splitlines() == ["producer flush took [NIK]", "owner [NIK]"]


def test_niks_planted_in_every_free_text_field_never_leave_worker_or_sink(kafka, registry, postgres, tmp_path):
    """Registrations, contributions and claims whose free text carries NIKs in the forms people type them, plus an
    invalid record whose region code is a NIK: the worker's topics, dead-letter headers, the warehouse, logs and
    metrics hold none of them; the tables are exact; the redactions are counted."""
    import dataclasses
    import re

    from sqlalchemy import create_engine, text

    from streams.simulator import Scenario
    from tests.conftest import unique
    from tests.expected import expected_regions
    from tests.helpers import niks_in, read_all
    from tests.test_topology import publish
    from tests.test_warehouse import sink_settings
    from tests.worker import Sink, Worker

    scale = 0.005
    events = list(Scenario.load(scale=scale, seed=5).events(6))
    forms = (lambda n: n, lambda n: f"nelayan, NIK {n}", lambda n: f"NIK: {n[:4]} {n[4:8]} {n[8:12]} {n[12:]}",
             lambda n: f"{n[:2]}.{n[2:4]}.{n[4:6]}-{n[6:12]}-{n[12:]}")
    planted: dict[str, int] = {"occupation": 0, "channel": 0, "claim_id": 0}
    for i, event in enumerate(events):
        if event.expect != "processed":
            continue
        text_of = forms[i % len(forms)](event.key)
        if event.record_name == "Registration" and i % 3 == 0:
            event.record["occupation"] = text_of[:200]
            planted["occupation"] += 1
        elif event.record_name == "Registration" and i % 3 == 1:
            event.record["channel"] = text_of
            planted["channel"] += 1
        elif event.record_name == "Claim":
            # one form per claim (its status events keep pairing by claim_id after scrubbing), the id kept unique
            form = forms[int(event.record["claim_id"][:8], 16) % len(forms)]
            event.record["claim_id"] = f"{event.record['claim_id']} {form(event.key)}"
            planted["claim_id"] += 1
    assert all(n > 5 for n in planted.values()), planted
    # and in every validated string field, which makes the record invalid: the dead-letter reason must not echo it
    contribution = next(e for e in events if e.record_name == "Contribution")
    bad = [dataclasses.replace(events[0], record={**events[0].record, "region_code": events[1].key,
                                                  "event_id": "0c6a3b1e-7a8b-4c1d-9e2f-3a4b5c6d7e8f"},
                               expect="dead_letter", fault="unknown_region"),
           dataclasses.replace(events[2], record={**events[2].record, "event_id": events[3].key},
                               expect="dead_letter", fault="invalid_event_id"),
           dataclasses.replace(events[4], record={**events[4].record, "nik": events[4].key + "9",
                                                  "event_id": "1c6a3b1e-7a8b-4c1d-9e2f-3a4b5c6d7e8f"},
                               expect="dead_letter", fault="invalid_nik"),
           dataclasses.replace(contribution, record={**contribution.record, "period": events[5].key,
                                                     "event_id": "2c6a3b1e-7a8b-4c1d-9e2f-3a4b5c6d7e8f"},
                               expect="dead_letter", fault="invalid_period")]
    events += bad
    settings = Settings(kafka_bootstrap_servers=kafka.bootstrap, schema_registry_url=registry.url,
                        topic_prefix=unique() + ".", topic_partitions=3, state_dir=tmp_path / "state",
                        app_id=unique("app-"), target_scale=scale)
    publish(settings, events)
    url = postgres.create_database(unique("wh"))
    worker = Worker(settings, tmp_path / "worker.log").start()
    sink = Sink(sink_settings(settings, url), tmp_path / "sink.log").start()
    try:
        worker.wait(lambda: sum(worker.events_accounted().values()) >= len(events), 120, "every record accounted")
        expected = expected_regions(events, scale=scale)
        worker.wait(lambda: worker.comparable_regions() == expected, 60,
                    "tables equal to the fold: free text changes no figure")
        assert worker.events_accounted() == {"processed": len(events) - len(bad), "dead_letter": len(bad)}
        valid = len(events) - len(bad)
        sink.wait(lambda: sum(sink.outcomes("jamsostek_sink_records_total").values()) >= len(events), 60,
                  "the sink to consume every record")
        engine = create_engine(url)
        with engine.connect() as conn:
            facts = sum(conn.execute(text(f"SELECT count(*) FROM {t}")).scalar()
                        for t in ("fact_registration", "fact_contribution", "fact_claim"))
            # occupations are kept as codes only: no free text reaches the warehouse (the planted "nelayan, NIK
            # ..." is a fisher)
            free_text = conn.execute(text("SELECT count(*) FROM fact_registration WHERE occupation IS NOT NULL")
                                     ).scalar()
            codes = dict(conn.execute(text("SELECT event_id, occupation_code FROM fact_registration")).all())
            dump = "\n".join(str(tuple(r)) for t in ("fact_registration", "fact_contribution", "fact_claim",
                                                     "region_alert") for r in conn.execute(text(f"SELECT * FROM {t}")))
        engine.dispose()
        assert facts == valid and free_text == 0
        fishers = [e.record["event_id"] for e in events if e.expect == "processed" and e.record_name == "Registration"
                   and e.record["occupation"].startswith("nelayan, NIK")]
        assert fishers and {codes[i] for i in fishers} == {"FISHER"}
        worker_metrics, sink_metrics = worker.metrics(), sink.metrics()
    finally:
        sink.stop()
        worker.stop()
    dead = read_all(kafka.bootstrap, settings.topics.dead_letter)
    reasons = {dict(d.headers)["dlq.reason"].decode(): dict(d.headers)["dlq.error"] for d in dead}
    assert set(reasons) == {e.fault for e in bad}
    assert b"[NIK]" in reasons["unknown_region"]  # the one detail that quotes the value: scrubbed
    assert all(d.value for d in dead)  # the original bytes stay for a replay, in the restricted dead-letter topic

    def digits_only(blob: str) -> str:  # "6472 0155 ..." and "64.72.01-..." found too
        return re.sub(r"[ .\-/]", "", blob)
    niks = {e.key for e in events}
    internal = [f"{settings.app_id}-participant-events", f"{settings.app_id}-participants-changelog",
                settings.topics.region_alerts]
    topic_text = "\n".join((r.value or b"").decode("latin-1") for t in internal for r in read_all(kafka.bootstrap, t))
    assert "[NIK]" in topic_text  # the participant events carry the scrubbed text
    headers = "\n".join(v.decode("latin-1") for r in dead for _, v in r.headers)
    logs = (tmp_path / "worker.log").read_text(errors="replace") + (tmp_path / "sink.log").read_text(errors="replace")
    for where, blob in (("internal topics", topic_text), ("dead-letter headers", headers), ("warehouse", dump),
                        ("logs", logs), ("metrics", str(worker_metrics) + str(sink_metrics))):
        assert not niks_in(digits_only(blob), niks), f"a planted NIK in the {where}"

    def redactions(metrics, where):
        return sum(v for (name, labels), v in metrics.items()
                   if name == "jamsostek_nik_redacted_total" and ("where", where) in labels)
    # occupations leave the worker and the sink as codes: only the channel and claim ids are scrubbed text
    assert redactions(worker_metrics, "record") >= planted["channel"] + planted["claim_id"]
    assert redactions(worker_metrics, "dead_letter") == 1
