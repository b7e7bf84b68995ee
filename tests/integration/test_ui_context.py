"""The alert page's records: read from Kafka when the sink kept none, kept after; and said
plainly when Kafka cannot give them. ``chainwatch ui`` as a user runs it, a real broker."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from kafka import KafkaConsumer

from pipeline import alert_context
from pipeline.alert_store import AlertStore
from pipeline.alerts import Alert
from pipeline.features.pools import WETH
from pipeline.records import DexEvent
from pipeline.settings import Settings
from pipeline.topics import ensure_topics
from tests.conftest import cli_env, consume_all, free_port
from tests.helpers import write_records
from tests.ui_server import call, get_json, ui_server

pytestmark = pytest.mark.integration
POOL, TOKEN = "0x" + "a7" * 20, "0x" + "c3" * 20


def _swap(i: int) -> DexEvent:
    return DexEvent(pool_address=POOL, token0=TOKEN, token1=WETH, kind="swap",
                    block_number=200 + i, block_timestamp=1_650_000_000 + 12 * i,
                    transaction_hash=f"0x{i + 7:064x}", log_index=3, amount1_in=10**17,
                    amount0_out=10**18, reserve0=(500 - i) * 10**18,
                    reserve1=(20 + i) * 10**18, to="0x" + "d4" * 20)


def _alert(source: dict[str, object]) -> Alert:
    return Alert.build(type="pump_and_dump", severity="high", score=0.8, subject=POOL,
                       detector="pump_burst", model_version="1", evidence={"burst": 0.8},
                       source=source, event_time=1_650_000_000 + 12 * 30,
                       detected_at=1_650_000_000 + 12 * 30)


def test_the_page_reads_the_records_from_kafka_and_keeps_them(
        settings: Settings, tmp_path: Path,
        consumer_factory: Callable[..., KafkaConsumer]) -> None:
    run = settings.replace(alerts__context_records=1000)
    ensure_topics(run)
    write_records(run, [_swap(i) for i in range(60)])
    on_kafka = consume_all(consumer_factory(run.topics.dex), 60)
    assert len(on_kafka) == 60
    partition = on_kafka[0].partition
    offsets = sorted(m.offset for m in on_kafka)
    alert = _alert({"topic": run.topics.dex, "partition": partition, "offset": offsets[30],
                    "item_ids": [_swap(30).item_id]})
    store = tmp_path / "alerts.db"
    with AlertStore.open(str(store)) as s:
        s.add([alert], {})  # stored without its records, as by a sink with context off
        alert_context.ensure_table(s)
        assert alert_context.load(s, alert.alert_id) is None
    env = cli_env(run) | {"CHAINWATCH_ALERTS_CONTEXT_RECORDS": "1000"}
    with ui_server(store, env=env) as url:
        status, _, body = call(f"{url}/alerts/{alert.alert_id}")
        page = body.decode()
        assert status == 200
        assert 'id="context-title"' in page and "records around the alert</title>" in page
        assert page.count("<polyline") == 2  # price and liquidity
        rows = page.split('<table id="records">')[1].split("</table>")[0]
        assert rows.count("<tr") == 1 + 40  # the header and the 40 nearest of 60
        assert rows.count('class="this"') == 1 and f">{offsets[30]}<" in rows
        got = get_json(f"{url}/api/alerts/{alert.alert_id}/context")
    ctx = got["context"]
    assert got["reason"] == "" and ctx["kind"] == "pool"
    assert [s["offset"] for s in ctx["samples"]] == offsets
    assert [s["item_id"] for s in ctx["samples"]] == [_swap(i).item_id for i in range(60)]
    assert ctx["samples"][30]["price"] == pytest.approx(50 / 470)
    assert ctx["samples"][30]["liquidity"] == pytest.approx(50.0)
    assert ctx["samples"][30]["flow_in"] == pytest.approx(0.1)
    with AlertStore.open(str(store), create=False) as s:  # kept: served without Kafka now
        kept = alert_context.load(s, alert.alert_id)
    assert kept is not None and json.loads(kept.to_json()) == ctx


def test_without_kafka_the_page_says_why_there_are_no_records(tmp_path: Path) -> None:
    alert = _alert({"topic": "chain.dex", "partition": 0, "offset": 5, "item_ids": ["x"]})
    store = tmp_path / "alerts.db"
    with AlertStore.open(str(store)) as s:
        s.add([alert], {})
    env = {"CHAINWATCH_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}"}  # no broker there
    with ui_server(store, env=cli_env(Settings()) | env) as url:
        started = time.monotonic()
        status, _, body = call(f"{url}/alerts/{alert.alert_id}")
        first_s = time.monotonic() - started
        page = body.decode()
        assert status == 200 and 'id="records-missing"' in page
        assert "Kafka cannot give them now" in page and "cannot reach Kafka" in page
        assert 'id="context-title"' not in page
        started = time.monotonic()
        got = get_json(f"{url}/api/alerts/{alert.alert_id}/context")
        again_s = time.monotonic() - started
    assert got["context"] is None and "Kafka cannot give them now" in got["reason"]
    assert first_s < 15  # bounded by the page's Kafka timeout, not kafka-python's 30 s
    assert again_s < first_s  # not tried again at once: remembered for a while
