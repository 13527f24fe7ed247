"""Reference data agrees with the programme's published figures (docs/domain.md)."""
import os
import time

import pytest

from streams.reference import REGION_CODES, reference

KEMENDAGRI = {"64.01": "Paser", "64.02": "Kutai Kartanegara", "64.03": "Berau", "64.07": "Kutai Barat",
              "64.08": "Kutai Timur", "64.09": "Penajam Paser Utara", "64.11": "Mahakam Ulu", "64.71": "Balikpapan",
              "64.72": "Samarinda", "64.74": "Bontang"}


def test_the_ten_regions_with_kemendagri_codes():
    ref = reference()
    assert {c: r.name for c, r in ref.regions.items()} == KEMENDAGRI
    assert REGION_CODES == set(KEMENDAGRI)
    assert {c for c, r in ref.regions.items() if r.kind == "city"} == {"64.71", "64.72", "64.74"}
    assert ref.regions["64.72"].nik_prefix == "6472"


def test_province_quota_is_spread_over_all_regions():
    ref = reference()
    shares = [r.quota["APBD_PROVINCE"] for r in ref.regions.values()]
    assert sum(shares) == ref.province_quota == 100_000
    assert all(s > 0 for s in shares)


def test_top_ups_and_targets():
    regions = reference().regions
    assert regions["64.72"].quota["APBD_REGENCY"] == 19_000  # Samarinda's own quota
    assert regions["64.72"].quota["APBD_PROVINCE"] == 13_000
    assert regions["64.09"].quota["APBD_PROVINCE"] == 5_614
    assert regions["64.02"].target["VULNERABLE_WORKER"] >= 75_000  # Kukar already has ~75k
    for r in regions.values():
        assert r.target["VULNERABLE_WORKER"] == sum(r.quota.values())
        assert r.target["NON_CIVIL_SERVANT"] > 0


def test_quotas_are_effective_dated():
    from streams.reference import reference
    ppu = reference().regions["64.09"]
    assert ppu.quota_at(2025 * 12 + 8)["APBD_REGENCY"] == 17_500  # September 2025
    assert ppu.quota_at(2025 * 12 + 9)["APBD_REGENCY"] == 17_500 + 5_084  # APBD-P, from October 2025


def test_targets_are_dated_and_follow_the_places_unless_a_source_gives_one():
    regions = reference().regions
    for period in range(2023 * 12 + 6, 2027 * 12):  # the programme's months
        for code, r in regions.items():
            target, places = r.target_at(period)["VULNERABLE_WORKER"], sum(r.quota_at(period).values())
            if code == "64.08" and period >= 2025 * 12:
                continue  # Kutai Timur: its regency's own target, below
            assert target == places, (code, period)
    ppu = regions["64.09"]
    assert ppu.target_at(2025 * 12 + 9)["VULNERABLE_WORKER"] == 5_614 + 17_500 + 5_084  # with the APBD-P places
    kutim = regions["64.08"]  # the regency's own programme, 2025: ~95,000 covered of a 160,000 target
    assert kutim.quota_at(2024 * 12 + 11) == {"APBD_PROVINCE": 12_483}
    assert kutim.quota_at(2025 * 12) == {"APBD_PROVINCE": 12_483, "APBD_REGENCY": 95_000}
    assert kutim.target_at(2024 * 12 + 11)["VULNERABLE_WORKER"] == 12_483
    assert kutim.target_at(2025 * 12)["VULNERABLE_WORKER"] == 160_000
    assert kutim.target_at(2025 * 12)["NON_CIVIL_SERVANT"] == kutim.target["NON_CIVIL_SERVANT"]  # undated: unchanged


def test_an_unknown_cohort_in_a_dated_target_is_refused(tmp_path):
    from streams.reference import DATA_FILE, load
    path = tmp_path / "regions.toml"
    path.write_text(DATA_FILE.read_text().replace('cohort = "VULNERABLE_WORKER"', 'cohort = "VULNERABLE"', 1))
    with pytest.raises(ValueError, match="VULNERABLE"):
        load(path)


def test_a_changed_reference_file_is_applied_without_a_restart_and_a_broken_one_is_refused(tmp_path, monkeypatch):
    import streams.reference as ref
    path = tmp_path / "regions.toml"
    original = ref.DATA_FILE.read_text()
    path.write_text(original)
    monkeypatch.setenv("REFERENCE_FILE", str(path))
    monkeypatch.setattr(ref, "RELOAD_CHECK_SECONDS", 0.0)
    ref.forget()
    try:
        assert ref.reference().regions["64.72"].quota_changes == ()
        samarinda_target = "target = { VULNERABLE_WORKER = 32000, NON_CIVIL_SERVANT = 11632 }\n"
        path.write_text(original.replace(samarinda_target, samarinda_target + '[[region.quota_change]]\n'
                                         'funder = "APBD_REGENCY"\nfrom = "2026-01"\nplaces = 21000\n', 1))
        os.utime(path, ns=(time.time_ns(), time.time_ns() + 1_000_000_000))
        samarinda = ref.reference().regions["64.72"]
        assert samarinda.quota_at(2026 * 12)["APBD_REGENCY"] == 21_000
        path.write_text("this is not TOML [")  # a broken edit: the last good version stays
        os.utime(path, ns=(time.time_ns(), time.time_ns() + 2_000_000_000))
        assert ref.reference().regions["64.72"] is samarinda
    finally:
        monkeypatch.undo()
        ref.forget()
    assert ref.reference().regions["64.72"].quota_changes == ()
