"""Reference data agrees with the programme's published figures (docs/domain.md)."""
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
