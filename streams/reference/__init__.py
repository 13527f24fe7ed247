"""Reference data for the 10 Kaltim regions (regions.toml), loaded into typed, immutable objects.

The file is re-read when it changes (``REFERENCE_FILE`` names another file than the packaged one): a quota
change decided mid-year (APBD-P) is a new ``quota_change`` entry with the month it takes effect from, applied by
the running worker without a redeploy; a ``target_change`` dates a coverage target the same way. The 10 region codes cannot change that way."""
from __future__ import annotations

import logging
import os
import threading
import time
import tomllib
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from types import MappingProxyType
from typing import Mapping

DATA_FILE = Path(__file__).with_name("regions.toml")
RELOAD_CHECK_SECONDS = 2.0  # how often the file's modification time is looked at
log = logging.getLogger(__name__)
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
    # (first period index it applies to, funding source, places from then on), in order (docs/domain.md)
    quota_changes: tuple[tuple[int, str, int], ...] = ()
    # (first period index it applies to, cohort, participants from then on), in order: a dated target
    target_changes: tuple[tuple[int, str, int], ...] = ()

    def quota_at(self, period: int) -> dict[str, int]:
        """The quota per funder in force in ``period`` (months since year 0, as streams.rules.period_index)."""
        return _in_force(self.quota, self.quota_changes, period)

    @property
    def funders(self) -> set[str]:
        """Every funder that has or had places here: at the start or by a dated change."""
        return set(self.quota) | {funder for _, funder, _ in self.quota_changes}

    def target_at(self, period: int) -> dict[str, int]:
        """The target per cohort in force in ``period`` (the coverage denominators of that month)."""
        return _in_force(self.target, self.target_changes, period)

    @property
    def nik_prefix(self) -> str:
        """First 4 NIK digits: province + regency/city, e.g. 64.72 -> 6472."""
        return self.code.replace(".", "")


def _in_force(base: Mapping[str, int], changes: tuple[tuple[int, str, int], ...], period: int) -> dict[str, int]:
    """``base`` with every dated change that starts in or before ``period`` applied, in date order."""
    values = dict(base)
    for first, name, value in changes:
        if first <= period:
            values[name] = value
    return values


@dataclass(frozen=True)
class Reference:
    regions: Mapping[str, Region]
    province_quota: int
    programme_start: str
    programme_end: str


def _period(month: str) -> int:
    """'2025-10' -> months since year 0."""
    year, month_ = month.split("-")
    return int(year) * 12 + int(month_) - 1


def _day(iso: str) -> int:
    """'2025-06-01' -> days since 1970-01-01."""
    return date.fromisoformat(iso).toordinal() - date(1970, 1, 1).toordinal()


_loaded: dict = {"at": 0.0, "mtime": None, "path": None, "value": None}
_lock = threading.Lock()


def data_file() -> Path:
    return Path(os.environ.get("REFERENCE_FILE") or DATA_FILE)


def reference() -> Reference:
    """The reference data, re-read when its file changed (checked every ``RELOAD_CHECK_SECONDS``). A changed file
    that does not load, or names other regions, is refused: the last good version stays."""
    now = time.monotonic()
    if _loaded["value"] is not None and now - _loaded["at"] < RELOAD_CHECK_SECONDS:
        return _loaded["value"]
    with _lock:
        path = data_file()
        try:
            mtime = path.stat().st_mtime_ns
        except OSError:
            mtime = None
        _loaded["at"] = now
        if _loaded["value"] is not None and (mtime, path) == (_loaded["mtime"], _loaded["path"]):
            return _loaded["value"]
        try:
            value = load(path)
        except Exception as exc:  # noqa: BLE001 - a broken edit must not stop the worker
            if _loaded["value"] is None:
                raise
            log.error("reference data %s not reloaded (keeping the last good version): %s", path, exc)
            _loaded["mtime"], _loaded["path"] = mtime, path
            return _loaded["value"]
        if _loaded["value"] is not None and set(value.regions) != set(_loaded["value"].regions):
            log.error("reference data %s names other regions than the 10: not reloaded", path)
        else:
            if _loaded["value"] is not None:
                log.info("reference data reloaded from %s", path)
            _loaded["value"] = value
        _loaded["mtime"], _loaded["path"] = mtime, path
        return _loaded["value"]


def forget() -> None:
    """The next ``reference()`` reads the file again (tests that point ``REFERENCE_FILE`` elsewhere)."""
    with _lock:
        _loaded.update(at=0.0, mtime=None, path=None)


def load(path: Path) -> Reference:
    raw = tomllib.loads(path.read_text())
    regions = {}
    for r in raw["region"]:
        changes = sorted((_period(c["from"]), c["funder"], int(c["places"])) for c in r.get("quota_change", []))
        target_changes = sorted((_period(c["from"]), c["cohort"], int(c["participants"]))
                                for c in r.get("target_change", []))
        funders = set(r["quota"]) | set(r.get("enrolment", {})) | {funder for _, funder, _ in changes}
        cohorts = set(r["target"]) | {cohort for _, cohort, _ in target_changes}
        unknown = (funders - set(FUNDING_SOURCES)) | (cohorts - set(COHORTS))
        if unknown:
            raise ValueError(f"{path}: region {r['code']} names unknown keys {sorted(unknown)}")
        regions[r["code"]] = Region(
            code=r["code"], name=r["name"], kind=r["kind"], population=r["population"],
            quota=MappingProxyType(dict(r["quota"])), target=MappingProxyType(dict(r["target"])),
            enrolment=MappingProxyType({funder: tuple((_day(a), _day(b)) for a, b in windows)
                                        for funder, windows in r.get("enrolment", {}).items()}),
            quota_changes=tuple(changes), target_changes=tuple(target_changes),
        )
    return Reference(
        regions=MappingProxyType(regions), province_quota=raw["province_quota"],
        programme_start=raw["programme_start"], programme_end=raw["programme_end"],
    )


def regions() -> Mapping[str, Region]:
    return reference().regions


REGION_CODES = frozenset(regions())


