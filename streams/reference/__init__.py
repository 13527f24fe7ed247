"""Reference data for the 10 Kaltim regions (regions.toml), loaded once into typed, immutable objects."""
from __future__ import annotations

import functools
import tomllib
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from types import MappingProxyType
from typing import Mapping

DATA_FILE = Path(__file__).with_name("regions.toml")
FUNDING_SOURCES = ("APBD_PROVINCE", "APBD_REGENCY", "EMPLOYER", "SELF", "DBH", "CSR", "APBDES", "OTHER")
COHORTS = ("VULNERABLE_WORKER", "NON_CIVIL_SERVANT", "GENERAL")


@dataclass(frozen=True)
class Region:
    code: str
    name: str
    kind: str  # "regency" | "city"
    population: int
    quota: Mapping[str, int]  # funding source -> quota
    target: Mapping[str, int]  # cohort -> target participants
    # funding source -> the days (since the epoch, inclusive) its enrolment tranches are open; a funder without a
    # calendar enrols all the time
    enrolment: Mapping[str, tuple[tuple[int, int], ...]] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def nik_prefix(self) -> str:
        """First 4 NIK digits: province + regency/city, e.g. 64.72 -> 6472."""
        return self.code.replace(".", "")

    @property
    def total_target(self) -> int:
        return sum(self.target.values())


@dataclass(frozen=True)
class Reference:
    regions: Mapping[str, Region]
    province_quota: int
    programme_start: str
    programme_end: str


def _day(iso: str) -> int:
    """'2025-06-01' -> days since 1970-01-01."""
    return date.fromisoformat(iso).toordinal() - date(1970, 1, 1).toordinal()


@functools.cache
def reference() -> Reference:
    raw = tomllib.loads(DATA_FILE.read_text())
    regions = {}
    for r in raw["region"]:
        funders = set(r["quota"]) | set(r.get("enrolment", {}))
        unknown = (funders - set(FUNDING_SOURCES)) | (set(r["target"]) - set(COHORTS))
        if unknown:
            raise ValueError(f"{DATA_FILE}: region {r['code']} names unknown keys {sorted(unknown)}")
        regions[r["code"]] = Region(
            code=r["code"], name=r["name"], kind=r["kind"], population=r["population"],
            quota=MappingProxyType(dict(r["quota"])), target=MappingProxyType(dict(r["target"])),
            enrolment=MappingProxyType({funder: tuple((_day(a), _day(b)) for a, b in windows)
                                        for funder, windows in r.get("enrolment", {}).items()}),
        )
    return Reference(
        regions=MappingProxyType(regions), province_quota=raw["province_quota"],
        programme_start=raw["programme_start"], programme_end=raw["programme_end"],
    )


def regions() -> Mapping[str, Region]:
    return reference().regions


REGION_CODES = frozenset(regions())


