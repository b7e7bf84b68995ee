"""``chainwatch ui`` in a real browser: Debian's headless Chromium driven by Selenium.

An alert produced to Kafka goes through the alert sink (AlertSinkService in a thread) into
the store, and from there by server-sent events into the open queue page: it must be there
within 2 s of the send (the latency is printed). A filter submitted from the keyboard hides
it; an acknowledgement on its page persists (a reload shows it, the store has it, the label
is on Kafka). On each store backend, status changes made outside the page (through the API,
and through the store from this process) reach the open queue's rows within 2 s: a badge
changes in place, a row that leaves the page's status filter goes, and the live region says
so; the time filter fields narrow the queue (and its live feed) and keep what was typed.
Screenshots go to the test's directory and, when CHAINWATCH_ARTEFACTS is set, there too.

Chromium and ChromeDriver come from Debian (`bash .ci/tools.sh`); nothing is downloaded.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kafka import KafkaConsumer, KafkaProducer

from consumers.alert_sink import AlertSinkService
from pipeline.alert_store import AlertStore
from pipeline.alerts import Alert
from pipeline.audit import AuditLog, Leaf, Signer
from pipeline.records import Label
from pipeline.settings import Settings
from pipeline.topics import ensure_topics
from tests.alert_backends import alert_store_url
from tests.conftest import cli_env, consume_all, free_port
from tests.helpers import make_alert
from tests.ui_server import call, ui_server

__all__ = ["alert_store_url"]  # the fixture, imported

pytestmark = pytest.mark.e2e

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1280,1000")
FRESH = Alert.build(type="wash_trading", severity="critical", score=0.97,
                    subject="0x" + "ab" * 20, detector="wash_cycle", model_version="3",
                    evidence={"cycle_len": 3, "volume_share": 0.62, "round_trips": 14},
                    source={"topic": "chain.dex", "partition": 1, "offset": 4242,
                            "item_ids": ["swap_0xfeed_1", "swap_0xfeed_2", "swap_0xfeed_3"]},
                    event_time=1_700_000_600, detected_at=1_700_000_610)


@pytest.fixture
def artefacts(tmp_path: Path) -> Iterator[Path]:
    """The screenshots' directory; copied to $CHAINWATCH_ARTEFACTS at the end when set."""
    where = tmp_path / "screenshots"
    where.mkdir()
    yield where
    if target := os.environ.get("CHAINWATCH_ARTEFACTS"):
        Path(target).mkdir(parents=True, exist_ok=True)
        for png in where.glob("*.png"):
            shutil.copy2(png, Path(target) / png.name)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Callable[[], object]]:
    """Starts headless Chromium when called (failing the test, in one line, when Debian's
    binaries are missing); quits it at the end."""
    started: list[object] = []

    def start() -> object:
        missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
        if missing:
            pytest.fail(f"no {' and no '.join(missing)}: run `bash .ci/tools.sh` (installs "
                        "Debian's chromium and chromium-driver)", pytrace=False)
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        options = webdriver.ChromeOptions()
        options.binary_location = str(CHROMIUM)
        for flag in (*FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}"):
            options.add_argument(flag)
        driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)),
                                  options=options)
        driver.set_page_load_timeout(30)
        started.append(driver)
        return driver

    yield start
    for driver in started:
        driver.quit()  # type: ignore[attr-defined]


def _seed(tmp_path: Path, settings: Settings) -> tuple[Path, Path, str]:
    """A store holding three older alerts (FRESH's subject among them), and an audit log
    holding all four, FRESH included (as the auditor would, from the same bytes)."""
    store = tmp_path / "alerts.db"
    older = [make_alert(i) for i in range(3)]
    older[1] = Alert.build(type="wash_trading", severity="medium", score=0.55,
                           subject=FRESH.subject, detector="wash_cycle", model_version="3",
                           evidence={"cycle_len": 2}, event_time=1_700_000_100,
                           detected_at=1_700_000_120,
                           source={"topic": "chain.dex", "partition": 1, "offset": 100,
                                   "item_ids": ["swap_0xbeef_1"]})
    with AlertStore.open(str(store)) as s:
        s.add(older, {})
    signer = Signer.generate()
    audit = tmp_path / "audit.db"
    with AuditLog.open(audit, signer) as log:
        log.append([Leaf.from_alert(a) for a in [*older, FRESH]])
    return store, audit, signer.public_hex()


def test_an_alert_on_kafka_reaches_the_open_page_and_an_ack_persists(
        *, browser: Callable[[], object], settings: Settings, tmp_path: Path, artefacts: Path,
        producer_factory: Callable[..., KafkaProducer],
        consumer_factory: Callable[..., KafkaConsumer]) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.remote.webdriver import WebDriver
    from selenium.webdriver.support.ui import WebDriverWait

    driver = browser()
    assert isinstance(driver, WebDriver)
    store, audit, key = _seed(tmp_path, settings)
    run = settings.replace(alerts__store=str(store))
    ensure_topics(run)
    labels = consumer_factory(run.topics.labels, auto_offset_reset="earliest")
    stop = threading.Event()
    sink = AlertSinkService(run, stop, poll_timeout_ms=100)
    sinking = threading.Thread(target=sink.run, daemon=True)
    sinking.start()
    try:
        with ui_server(store, "--audit-store", str(audit), "--public-key", key,
                       env=cli_env(run)) as url:
            # -- the queue, live ------------------------------------------------------------
            driver.get(url + "/")
            assert driver.title == "Alert queue · chainwatch"
            for control in driver.find_elements(By.CSS_SELECTOR, "form input, form select"):
                labelled = driver.find_elements(By.CSS_SELECTOR,
                                                f'label[for="{control.get_attribute("id")}"]')
                assert labelled, f"form control {control.get_attribute('name')} has no label"
            assert driver.find_elements(By.CSS_SELECTOR, "header nav, main, footer")
            WebDriverWait(driver, 10).until(lambda d: d.find_element(
                By.ID, "live").get_attribute("data-state") == "live")
            before = len(driver.find_elements(By.CSS_SELECTOR, "#alerts tbody tr"))
            assert before == 3
            producer = producer_factory(linger_ms=0)
            sent = time.monotonic()
            producer.send(run.topics.alerts, value=FRESH.to_json(),
                          key=FRESH.subject.encode()).get(timeout=10)
            row = f'#alerts tbody tr[data-alert-id="{FRESH.alert_id}"]'
            WebDriverWait(driver, 10, poll_frequency=0.02).until(
                lambda d: d.find_elements(By.CSS_SELECTOR, row))
            latency = time.monotonic() - sent
            first = driver.find_element(By.CSS_SELECTOR, "#alerts tbody tr")
            assert first.get_attribute("data-alert-id") == FRESH.alert_id  # at the top
            assert "critical" in first.text and FRESH.subject in first.text
            assert "1 new alert" in driver.find_element(By.ID, "live").text
            driver.save_screenshot(str(artefacts / "1-queue-live.png"))
            latencies = [latency]
            for i in range(4):  # four more, one at a time: how steady is it?
                more = dataclasses.replace(make_alert(100 + i), alert_id=f"more-{i}",
                                           type="anomalous_transfer", severity="low")
                sent = time.monotonic()
                producer.send(run.topics.alerts, value=more.to_json(),
                              key=more.subject.encode()).get(timeout=10)

                def on_top(d: WebDriver, m: Alert = more) -> bool:
                    return d.find_element(By.CSS_SELECTOR, "#alerts tbody tr") \
                        .get_attribute("data-alert-id") == m.alert_id

                WebDriverWait(driver, 10, poll_frequency=0.02).until(on_top)
                latencies.append(time.monotonic() - sent)
            print("\nalert on Kafka -> visible in the open page, 5 alerts: "
                  + ", ".join(f"{t * 1000:.0f}" for t in latencies) + " ms")
            assert driver.find_element(By.ID, "count").text == "8"
            assert max(latencies) < 2.0, f"an alert took {max(latencies):.2f} s to reach the page"

            # -- a filter, from the keyboard, hides it -------------------------------------
            field = driver.find_element(By.ID, "f-type")
            field.send_keys("rug_pull", Keys.ENTER)
            WebDriverWait(driver, 10).until(lambda d: "type=rug_pull" in d.current_url)
            shown = [r.get_attribute("data-alert-id") for r in
                     driver.find_elements(By.CSS_SELECTOR, "#alerts tbody tr")]
            assert FRESH.alert_id not in shown and shown == [make_alert(2).alert_id,
                                                             make_alert(0).alert_id]
            assert driver.find_element(By.ID, "count").text == "2"
            driver.save_screenshot(str(artefacts / "2-queue-filtered.png"))

            # -- its page: evidence, chart, proof; acknowledged with a note --------------------
            driver.get(url + "/")
            driver.find_element(By.CSS_SELECTOR, f'{row} a').click()
            WebDriverWait(driver, 10).until(lambda d: FRESH.alert_id in d.current_url)
            assert driver.find_element(By.ID, "proof").text == "VERIFIED"
            evidence = driver.find_element(By.ID, "evidence").text
            assert "volume_share" in evidence and "0.62" in evidence
            assert "swap_0xfeed_3" in driver.find_element(By.ID, "items").text
            assert len(driver.find_elements(By.CSS_SELECTOR, "svg.chart circle")) == 2
            driver.set_window_size(1280, 2000)
            driver.save_screenshot(str(artefacts / "3-alert-page.png"))
            driver.find_element(By.CSS_SELECTOR, 'input[name="status"][value="confirmed"]') \
                .click()
            note = driver.find_element(By.ID, "note")
            note.clear()
            note.send_keys("self-trades between two wallets of one owner")
            driver.find_element(By.CSS_SELECTOR, ".status-form button[type=submit]").click()
            WebDriverWait(driver, 15).until(lambda d: d.find_elements(By.ID, "label-result"))
            assert "published as a label" in driver.find_element(By.ID, "label-result").text
            driver.refresh()
            assert driver.find_element(By.ID, "current-status").text == "confirmed"
            assert driver.find_element(By.ID, "current-note").text.startswith("self-trades")
            assert "confirmed" in driver.find_element(By.ID, "history").text
            driver.save_screenshot(str(artefacts / "4-alert-acknowledged.png"))
            driver.set_window_size(1280, 1000)
            driver.get(url + "/")
            assert "confirmed" in driver.find_element(By.CSS_SELECTOR, row).text
    finally:
        stop.set()
        sinking.join(10)
    with AlertStore.open(str(store), create=False) as s:
        kept = s.get(FRESH.alert_id)
        assert kept is not None and kept.status == "confirmed" and kept.raw == FRESH.to_json()
    published = [Label.from_dict(json.loads(m.value)) for m in consume_all(labels, 1)]
    assert [(lb.subject, lb.label, lb.source) for lb in published] == [
        (FRESH.subject, 1, "analyst")]
    assert sorted(p.name for p in artefacts.glob("*.png")) == [
        "1-queue-live.png", "2-queue-filtered.png", "3-alert-page.png",
        "4-alert-acknowledged.png"]


def test_status_changes_made_elsewhere_reach_the_open_queue_and_time_filters_work(
        *, browser: Callable[[], object], alert_store_url: str, artefacts: Path,
        request: pytest.FixtureRequest) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.remote.webdriver import WebDriver
    from selenium.webdriver.support.ui import WebDriverWait

    driver = browser()
    assert isinstance(driver, WebDriver)
    backend = request.node.callspec.params["alert_store_url"]
    alerts = [make_alert(i) for i in range(4)]  # detected at 0, 1, 2, 3 (stream time)
    ids = [a.alert_id for a in alerts]
    env = dict(os.environ) | {"CHAINWATCH_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}"}
    with AlertStore.open(alert_store_url) as other, ui_server(alert_store_url, env=env) as url:
        other.add(alerts, {})

        def row(alert_id: str) -> str:
            return f'#alerts tbody tr[data-alert-id="{alert_id}"]'

        def badge(alert_id: str) -> str:
            return driver.find_element(By.CSS_SELECTOR, f"{row(alert_id)} span.status").text

        def live_page(path: str) -> None:
            driver.get(url + path)
            WebDriverWait(driver, 10).until(lambda d: d.find_element(
                By.ID, "live").get_attribute("data-state") == "live")

        def within_2s(what: Callable[[], bool], action: Callable[[], object]) -> float:
            started = time.monotonic()
            action()
            WebDriverWait(driver, 10, poll_frequency=0.02).until(lambda _d: what())
            took = time.monotonic() - started
            assert took < 2.0, f"took {took:.2f} s to reach the page"
            return took

        # -- a badge changes in place: through the API, through the store ------------------
        live_page("/")
        assert [badge(i) for i in ids] == ["new"] * 4
        took = [within_2s(lambda: badge(ids[1]) == "acknowledged", lambda: call(
            f"{url}/api/alerts/{ids[1]}/status", "POST",
            {"status": "acknowledged", "note": "looking"}))]
        live = driver.find_element(By.ID, "live").text
        assert f"Alert {ids[1][:12]} (rug_pull) is now acknowledged, note: looking." == live
        took.append(within_2s(lambda: badge(ids[2]) == "false_positive",
                              lambda: other.set_status(ids[2], "false_positive")))
        assert driver.find_element(By.CSS_SELECTOR, f"{row(ids[2])} span.status") \
            .get_attribute("class") == "status status-false_positive"
        assert len(driver.find_elements(By.CSS_SELECTOR, "#alerts tbody tr")) == 4
        driver.save_screenshot(str(artefacts / f"5-queue-status-live-{backend}.png"))

        # -- a row leaves a status filter: gone, and said ---------------------------------
        live_page("/?status=new")
        assert [r.get_attribute("data-alert-id") for r in driver.find_elements(
            By.CSS_SELECTOR, "#alerts tbody tr")] == [ids[3], ids[0]]
        took.append(within_2s(lambda: not driver.find_elements(By.CSS_SELECTOR, row(ids[3])),
                              lambda: other.set_status(ids[3], "confirmed", "drained")))
        assert driver.find_element(By.ID, "live").text == (
            f"Alert {ids[3][:12]} (rug_pull) is now confirmed; removed from this list, which "
            "shows new only.")
        assert driver.find_element(By.ID, "count").text == "1"
        took.append(within_2s(lambda: not driver.find_elements(By.CSS_SELECTOR, "#alerts tbody tr"),
                              lambda: call(f"{url}/api/alerts/{ids[0]}/status", "POST",
                                           {"status": "acknowledged"})))
        assert driver.find_element(By.ID, "empty").text == \
            "No alerts shown now match these filters."
        driver.save_screenshot(str(artefacts / f"6-queue-status-filter-{backend}.png"))
        print(f"\nstatus change -> the open page ({backend}): "
              + ", ".join(f"{t * 1000:.0f}" for t in took) + " ms")

        # -- the time fields: labelled, applied, live, kept --------------------------------
        driver.get(url + "/")
        for name in ("since", "until"):
            field = driver.find_element(By.ID, f"f-{name}")
            assert field.get_attribute("name") == name
            assert driver.find_element(By.CSS_SELECTOR, f'label[for="f-{name}"]').text
            assert field.get_attribute("aria-describedby") == "f-time-hint"
        assert "ISO 8601" in driver.find_element(By.ID, "f-time-hint").text
        driver.find_element(By.ID, "f-since").send_keys("1970-01-01T00:00:01Z")
        driver.find_element(By.ID, "f-until").send_keys("2", Keys.ENTER)
        WebDriverWait(driver, 10).until(lambda d: "until=2" in d.current_url)
        assert "since=1970-01-01T00%3A00%3A01Z" in driver.current_url
        shown = [r.get_attribute("data-alert-id") for r in
                 driver.find_elements(By.CSS_SELECTOR, "#alerts tbody tr")]
        assert shown == [ids[2], ids[1]]
        assert driver.find_element(By.ID, "window").text == \
            "detected from 1970-01-01 00:00:01Z to 1970-01-01 00:00:02Z"
        WebDriverWait(driver, 10).until(lambda d: d.find_element(
            By.ID, "live").get_attribute("data-state") == "live")
        inside = dataclasses.replace(make_alert(40), detected_at=2)
        outside = make_alert(41)  # detected at 41: after until
        other.add([outside, inside], {})
        WebDriverWait(driver, 5, poll_frequency=0.02).until(
            lambda d: d.find_elements(By.CSS_SELECTOR, row(inside.alert_id)))
        assert not driver.find_elements(By.CSS_SELECTOR, row(outside.alert_id))
        driver.refresh()
        assert driver.find_element(By.ID, "f-since").get_attribute("value") == \
            "1970-01-01T00:00:01Z"
        assert driver.find_element(By.ID, "f-until").get_attribute("value") == "2"
        assert [r.get_attribute("data-alert-id") for r in driver.find_elements(
            By.CSS_SELECTOR, "#alerts tbody tr")] == [inside.alert_id, ids[2], ids[1]]
        driver.save_screenshot(str(artefacts / f"7-queue-time-filter-{backend}.png"))
