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
