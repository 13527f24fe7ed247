"""The live page in a real browser (headless Chromium from Debian, driven by Selenium): while the simulator
publishes, the numbers on the page change without a reload, and once the stream is quiet they equal GET /regions."""
from __future__ import annotations

import shutil
import threading
import time
from datetime import datetime, timedelta

import pytest
import requests

from streams.config import Settings
from streams.simulator import Scenario
from tests.conftest import unique
from tests.test_topology import publish
from tests.worker import Worker

SCALE = 0.01


@pytest.fixture
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver):
        pytest.fail("chromium and chromium-driver are missing: scripts/bootstrap.sh test installs them")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1100"):
        options.add_argument(arg)
    b = webdriver.Chrome(options=options, service=Service(driver))
    yield b
    b.quit()


def page_figures(browser) -> dict[str, tuple[int, int]]:
    """Region code -> (registered, active) as the page shows them, read in one go (the table re-renders)."""
    rows = browser.execute_script("""return Array.from(document.querySelectorAll('#regions tbody tr')).map(r =>
        [r.dataset.code, r.querySelector('.registered').textContent, r.querySelector('.active').textContent]);""")
    return {code: (int(reg.replace(",", "")), int(act.replace(",", ""))) for code, reg, act in rows}


def test_live_page_updates_without_reload_and_matches_the_api(kafka, registry, tmp_path, browser):
    settings = Settings(kafka_bootstrap_servers=kafka.bootstrap, schema_registry_url=registry.url,
                        topic_prefix=unique() + ".", topic_partitions=2, state_dir=tmp_path / "state",
                        app_id=unique("app-"), target_scale=SCALE, simulated=True)
    events = list(Scenario.load(scale=SCALE).events(4))
    publish(settings, events[:200])
    # a source partition with no record (here: the few claims all hash to one partition) holds the stream clock
    # back until it counts as idle: 5 s here (the tests' Worker: 10), so the protection figures, which need the clock,
    # come soon; the region page is compared once the clock is known
    worker = Worker(settings, tmp_path / "worker.log", CLOCK_IDLE_SECONDS="5").start()
    try:
        browser.get(worker.url("/"))
        worker.wait(lambda: sum(r for r, _ in page_figures(browser).values()) > 0, 60, "the page to show figures")
        first = page_figures(browser)
        # the simulator goes on publishing while the page stays open (no reload from here on)
        feeder = threading.Thread(target=lambda: [publish(settings, events[i:i + 500]) or time.sleep(0.3)
                                                  for i in range(200, len(events), 500)])
        feeder.start()
        worker.wait(lambda: page_figures(browser) != first, 60, "the figures on the page to change")
        feeder.join()
        worker.wait(lambda: sum(worker.events_accounted().values()) >= len(events), 120, "every record processed")
        api = lambda: {r["code"]: (r["registered"], r["active"]) for r in
                       requests.get(worker.url("/regions/"), timeout=5).json()}
        worker.wait(lambda: page_figures(browser) == api(), 30, "the page to equal GET /regions")
        assert sum(r for r, _ in api().values()) > sum(r for r, _ in first.values())
        assert "Mahakam Ulu" in browser.page_source and "Coverage over time" in browser.page_source
        samarinda = browser.execute_script(
            "return document.querySelector('tr[data-code=\"64.72\"] td.quota').innerText")
        assert "province:" in samarinda and "regency/city:" in samarinda  # quota per funding source
        # claims by programme: each claim once (its SUBMITTED event), not once per status it went through
        shown = browser.execute_script("""return Object.fromEntries(Array.from(
            document.querySelectorAll('#regions tbody tr')).map(r => [r.dataset.code,
            r.querySelector('.claims').textContent]));""")
        regions = requests.get(worker.url("/regions/"), timeout=5).json()
        claims_of = lambda s: max(s.get("SUBMITTED", {}).get("count", 0) - s.get("RETURNED", {}).get("count", 0), 0)
        want = {r["code"]: " · ".join(f"{p} {claims_of(s)}"
                                      + (f" ({s['PAID']['count']} paid)" if s.get("PAID", {}).get("count") else "")
                                      for p, s in r["claims"].items()) or "–" for r in regions}
        assert shown == want and any(v != "–" for v in want.values())
        assert any(sum(x["count"] for x in s.values()) > s.get("SUBMITTED", {}).get("count", 0)
                   for r in regions for s in r["claims"].values())  # the old sum would have shown more
        # at 1,400 px every column fits, even for the widest row a region can have (every stall kind firing, every
        # programme claimed, quota from both funders, figures in the millions): the status column is not clipped
        overflow = browser.execute_script("""
            const worst = JSON.parse(JSON.stringify(arguments[0]));
            Object.assign(worst, {registered: 12345678, active: 12345678, forecast_fill_date: "2026-12-31"});
            worst.alerts = ["NO_REGISTRATIONS", "PACE_BELOW_TARGET", "COVERAGE_FALLING", "CONTRIBUTIONS_STOPPED"]
                .map(kind => ({kind, severity: "CRITICAL", since: "2025-01-01"}));
            worst.quota = {APBD_PROVINCE: {used: 1234567, total: 1234567, remaining: 1234567, over_quota: 12345},
                           APBD_REGENCY: {used: 1234567, total: 1234567, remaining: 1234567, over_quota: 12345}};
            worst.claims = Object.fromEntries(["JKK", "JKM", "JHT", "JP", "JKP"].map(p =>
                [p, {SUBMITTED: {count: 123456, amount_idr: 0}, PAID: {count: 123456, amount_idr: 123456789012}}]));
            const body = document.querySelector('#regions tbody');
            body.insertAdjacentHTML('beforeend', row(worst));
            return Array.from(body.querySelectorAll('td.status'))
                .map(td => td.getBoundingClientRect().right - document.documentElement.clientWidth);""",
            regions[0])
        assert overflow and max(overflow) <= 0, overflow
        assert "Figures complete up to" in browser.page_source and "later events still count" in browser.page_source
        # fed by the simulator: the page says so, and at what scale
        banner = browser.find_element("id", "simulated")
        assert banner.is_displayed() and "Simulated data" in banner.text and "1 % of the province" in banner.text
        browser.save_screenshot(str(tmp_path / "page.png"))
        assert (tmp_path / "page.png").stat().st_size > 10_000
        # the region page, reached from the table: who is protected, in arrears, ended; claims with turnaround
        code = max(regions, key=lambda r: sum(t["paid"] for t in r["claims_turnaround"].values()))["code"]
        browser.find_element("css selector", f'tr[data-code="{code}"] a').click()
        worker.wait(lambda: browser.current_url.endswith(f"/region/{code}/") and browser.execute_script(
            "return document.querySelectorAll('#cohorts tbody tr').length") == 3, 30, "the region page")
        def region_view() -> dict:
            return requests.get(worker.url(f"/regions/{code}/"), timeout=5).json()

        def shown() -> dict:
            return browser.execute_script("""return Object.fromEntries(Array.from(
                document.querySelectorAll('#cohorts tbody tr')).map(r => [r.dataset.cohort,
                ['registered', 'protected', 'arrears1', 'arrears2', 'arrears3', 'ended', 'exited', 'moved',
                 'budget'].map(
                    c => r.querySelector('.' + c).textContent)]));""")
        def want(view: dict) -> dict | None:  # None until the stream clock is known (protection needs it)
            return {c: [f"{v[k]:,}" for k in ("registered", "protected")]
                    + [f"{v['in_arrears'][m]:,}" for m in ("1", "2", "3")] + [f"{v['ended']:,}"]
                    + [f"{v['exited'].get(reason, 0):,}" for reason in ("death", "wage_employment", "budget_ended")]
                    for c, v in view["cohorts"].items()} if view["clock_ms"] else None
        program = next(iter(region_view()["claims_turnaround"]))

        def page() -> dict:
            """What the region page shows: protection, a claims programme's turnaround, members by district, age
            band and sex (small cells as "<10"), protection per funder, places, the alert history's rows."""
            got = browser.execute_script(f"""
                const r = document.querySelector('#claims tr[data-program="{program}"]');
                return {{cells: [r.querySelector('.p50').textContent, r.querySelector('.p90').textContent],
                  tables: Array.from(document.querySelectorAll('table.breakdown')).map(t =>
                    [t.dataset.cohort, t.dataset.dimension, Array.from(t.querySelectorAll('tbody tr')).map(r =>
                      Array.from(r.cells).map(c => c.textContent))]),
                  funders: Array.from(document.querySelectorAll('#funders tbody tr')).map(r =>
                    [r.dataset.cohort, r.dataset.funder, r.cells[2].textContent]),
                  places: Array.from(document.querySelectorAll('#quota tbody tr')).map(r =>
                    [r.dataset.funder, r.querySelector('.filled').textContent, r.querySelector('.paid').textContent]),
                  history: document.querySelectorAll('#alert-history tbody tr').length}};""")
            return {**got, "shown": shown(), "tables": {(c, d): rows for c, d, rows in got["tables"]}}

        def expected(view: dict) -> dict:
            turnaround = view["claims_turnaround"][program]
            return {"shown": want(view),
                    "cells": [f"{turnaround['p50_days']} days", f"{turnaround['p90_days']} days"],
                    "tables": {(c, d): [[k, "<10" if n is None else f"{n:,}"] for k, n in cells.items()] or [["none yet"]]
                               for c, dims in view["breakdown"].items() if c != "GENERAL" for d, cells in dims.items()},
                    "funders": [[c, f, f"{p['protected']:,}"] for c, v in view["cohorts"].items()
                                for f, p in v["funders"].items()],
                    "places": [[f, f"{q['filled_this_month']:,}", f"{q['paid_idr']:,}"] for f, q in view["quota"].items()],
                    "history": max(len(view["alert_history"]), 1)}
        # the page and the API at one moment (the stream clock may still move, and with it protection and alerts:
        # the page follows within a second)
        worker.wait(lambda: (lambda view: want(view) is not None and page() == expected(view))(region_view()), 60,
                    "the region page to show what the API gives")
        view = region_view()
        assert view["name"] in browser.find_element("id", "name").text
        assert any(n is None for dims in view["breakdown"].values() for cells in dims.values() for n in cells.values())
        assert any(v["funders"] for v in view["cohorts"].values())
        assert any(q["paid_idr"] for q in view["quota"].values())
        # the chart has its past on first load: a fresh page draws the evaluated days at once, not one point per
        # refresh from now on
        past = requests.get(worker.url("/history/"), timeout=5).json()
        samarinda = next(r for r in requests.get(worker.url("/regions/"), timeout=5).json() if r["code"] == "64.72")
        # a point per evaluated day, from the first (how many depends on when the stream's clock first moved: an
        # input partition without records holds it until declared idle)
        days = [p["day"] for p in past["64.72"]]
        first_day = datetime.fromisoformat(samarinda["evaluating_since"])
        assert days == [(first_day + timedelta(days=i)).date().isoformat() for i in range(len(days))]
        assert days and days[-1] <= samarinda["evaluated_through"]  # read after the history
        browser.get(worker.url("/"))
        worker.wait(lambda: browser.execute_script("return (history['64.72'] || []).length") >= len(past["64.72"]),
                    10, "the chart's history on first load")
    finally:
        worker.stop()
