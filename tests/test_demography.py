"""NIK attributes and small-cell suppression (streams/demography.py): no broker."""
from __future__ import annotations

from datetime import datetime, timezone

from hypothesis import given, strategies as st

from streams.demography import UNKNOWN, Attributes, age_band, from_nik, suppressed


def ms(year: int, month: int, day: int) -> int:
    return int(datetime(year, month, day, tzinfo=timezone.utc).timestamp() * 1000)


def test_district_age_and_sex_from_the_nik():
    # Samarinda, district 05, a woman born 1 July 1985 (41 = 1 + 40), registering on 30 June 2025: still 39
    assert from_nik("6472054107850003", "64.72", ms(2025, 6, 30)) == Attributes("64.72.05", "35-44", "female")
    assert from_nik("6472054107850003", "64.72", ms(2030, 7, 1)) == Attributes("64.72.05", "45-54", "female")
    # a man born 2004 (two-digit year not after the event's: 20xx), and one born 1960
    assert from_nik("6401120304040001", "64.01", ms(2025, 1, 1)) == Attributes("64.01.12", "<25", "male")
    assert from_nik("6401120304600001", "64.01", ms(2025, 1, 1)) == Attributes("64.01.12", "55+", "male")


def test_what_the_nik_cannot_say_is_unknown():
    # issued in Balikpapan, registering in Samarinda: no Samarinda district
    assert from_nik("6471054107850003", "64.72", ms(2025, 1, 1)).district == UNKNOWN
    assert from_nik("6472004107850003", "64.72", ms(2025, 1, 1)).district == UNKNOWN  # districts start at 01
    assert from_nik("6472057213850003", "64.72", ms(2025, 1, 1))[1:] == (UNKNOWN, UNKNOWN)  # month 13
    assert from_nik("6472054002850003", "64.72", ms(2025, 1, 1))[1:] == (UNKNOWN, UNKNOWN)  # day 40


@given(st.text(alphabet="0123456789", min_size=16, max_size=16), st.integers(1_400_000_000_000, 1_900_000_000_000))
def test_any_sixteen_digits_give_coarse_attributes(nik, at):
    district, band, sex = from_nik(nik, "64.72", at)
    assert district == UNKNOWN or (district.startswith("64.72.") and len(district) == 8)
    assert band in ("<25", "25-34", "35-44", "45-54", "55+", UNKNOWN) and sex in ("female", "male", UNKNOWN)


def from_nik_with_datetimes(nik: str, region_code: str, at_ms: int) -> Attributes:
    """The reference: ``from_nik`` as first written, with the datetime module doing the calendar."""
    district = f"{region_code}.{nik[4:6]}" if nik[:4] == region_code.replace(".", "") and nik[4:6] != "00" \
        else UNKNOWN
    day, month, yy = int(nik[6:8]), int(nik[8:10]), int(nik[10:12])
    sex = "female" if day > 40 else "male"
    day -= 40 if day > 40 else 0
    at = datetime.fromtimestamp(at_ms / 1000, tz=timezone.utc)
    year = 2000 + yy if 2000 + yy <= at.year else 1900 + yy
    try:
        born = datetime(year, month, day, tzinfo=timezone.utc)
    except ValueError:
        return Attributes(district, UNKNOWN, UNKNOWN)
    age = at.year - born.year - ((at.month, at.day) < (born.month, born.day))
    return Attributes(district, age_band(age), sex)


@given(st.sampled_from(["6472", "6401", "6411", "6471"]), st.integers(0, 99), st.integers(0, 79),
       st.integers(0, 13), st.integers(0, 99), st.integers(-2_000_000_000_000, 4_000_000_000_000))
def test_the_calendar_arithmetic_gives_what_datetimes_give(regency, district, day, month, yy, at):
    """Birthdays on the event's day, 29 February (leap and not), days and months out of range, events from 1906 to
    2096: the same attributes as the datetime version."""
    nik = f"{regency}{district:02d}{day:02d}{month:02d}{yy:02d}0001"
    for region in ("64.72", "64.01"):
        assert from_nik(nik, region, at) == from_nik_with_datetimes(nik, region, at)


@given(st.dates(min_value=datetime(1950, 1, 1).date(), max_value=datetime(2090, 12, 31).date()),
       st.integers(0, 86_399_999))
def test_a_birthday_on_the_events_day_counts_the_year(born, ms_of_day):
    """Born on the event's calendar day (a woman's day + 40, two-digit years): the same as the datetime version."""
    for female in (False, True):
        nik = f"647205{born.day + 40 * female:02d}{born.month:02d}{born.year % 100:02d}0001"
        for years in (0, 17, 25, 35, 45, 55, 99):
            try:
                day = born.replace(year=born.year + years)
            except ValueError:  # 29 February in a year without one
                continue
            at = ms(day.year, day.month, day.day) + ms_of_day
            assert from_nik(nik, "64.72", at) == from_nik_with_datetimes(nik, "64.72", at)


def test_small_cells_are_hidden_and_a_lone_hidden_cell_takes_the_next_smallest_with_it():
    assert suppressed({"a": 30, "b": 10}) == {"a": 30, "b": 10}
    assert suppressed({"a": 30, "b": 12, "c": 9}) == {"a": 30, "b": None, "c": None}
    assert suppressed({"a": 30, "b": 2, "c": 9}) == {"a": 30, "b": None, "c": None}
    assert suppressed({"a": 3}) == {"a": None} and suppressed({"a": 0, "b": 40}) == {"b": 40}


@given(st.dictionaries(st.sampled_from("abcdefgh"), st.integers(0, 40)))
def test_no_hidden_cell_can_be_recovered_from_the_total(cells):
    shown = suppressed(cells)
    hidden = [k for k, v in shown.items() if v is None]
    assert len(hidden) != 1 or len(shown) == 1  # total minus the shown cells names no single cell
    assert all(v is None or v >= 10 for v in shown.values())
    assert all(cells[k] >= 10 for k, v in shown.items() if v is not None)
