"""Occupation codes (streams/occupation.py): no broker."""
from __future__ import annotations

from streams.occupation import CODES, OTHER, normalise
from streams.simulator.scenario import OCCUPATIONS


def test_what_officers_type_becomes_a_code():
    assert normalise("Nelayan") == normalise("nelayan tradisional") == "FISHER"
    assert normalise("Petani sawit") == normalise("pekebun sawit") == normalise("buruh tani") == "FARMER"
    assert normalise("guru ngaji") == "RELIGIOUS_WORKER" and normalise("guru honorer") == "TEACHER"
    assert normalise("pengemudi ojek") == "DRIVER" and normalise("pengemudi dinas") == "CIVIL_SERVICE_CONTRACT"
    assert normalise("nelayan, NIK 6472014107850003") == "FISHER"  # a NIK typed along changes nothing
    assert normalise("astronaut") == normalise("") == OTHER


def test_every_occupation_the_simulator_sends_has_a_code():
    for cohort, names in OCCUPATIONS.items():
        for name in names:
            assert normalise(name) in CODES, (cohort, name)
