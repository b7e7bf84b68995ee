"""``chainwatch alerts`` as a user types it, on the store a demo run leaves behind."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from kafka import KafkaConsumer

from pipeline.alert_store import AlertStore
from pipeline.alerts import Alert
from pipeline.records import Label
from pipeline.settings import Settings
from pipeline.topics import ensure_topics
from tests.conftest import CHAINWATCH, cli_env, consume_all, free_port
from tests.helpers import make_alert

pytestmark = pytest.mark.e2e


def run(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None,
        timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CHAINWATCH, *args], capture_output=True, text=True, timeout=timeout,
                          cwd=cwd, env=env or dict(os.environ), check=False)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One demo run in its own directory: its JSON summary, with ``dir`` and ``store``."""
    where = tmp_path_factory.mktemp("demo")
    result = run("demo", "--json", "--quiet", "--blocks", "300", cwd=where)
    assert result.returncode == 0, result.stderr
    summary: dict[str, Any] = json.loads(result.stdout)
    return summary | {"dir": where, "store": str(where / summary["alert_store"]),
                      "audit_store": str(where / summary["audit"]["store"])}


def test_list_json_prints_the_demos_alerts_newest_first(demo: dict[str, Any]) -> None:
    result = run("alerts", "list", "--json", cwd=demo["dir"],
                 env=dict(os.environ) | {"CHAINWATCH_ALERTS_STORE": demo["store"]})
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(rows) == demo["alerts_stored"] == sum(demo["alerts_by_type"].values()) >= 3
    assert [r["seq"] for r in rows] == sorted((r["seq"] for r in rows), reverse=True)
    assert {r["status"] for r in rows} == {"new"} and all(r["note"] is None for r in rows)
    assert {r["type"] for r in rows} == set(demo["alerts_by_type"])
    fields = {k: rows[0][k] for k in Alert.__dataclass_fields__}
    assert Alert.from_json(json.dumps(fields).encode()).alert_id == rows[0]["alert_id"]

    table = run("alerts", "list", "--store", demo["store"], "--type", "pump_and_dump")
    assert table.returncode == 0 and table.stdout.startswith("  seq  alert id")
    assert all("pump_and_dump" in line for line in table.stdout.splitlines()[1:])
    one = run("alerts", "list", "--store", demo["store"], "--limit", "1", "--json")
    assert len(one.stdout.splitlines()) == 1
    none = run("alerts", "list", "--store", demo["store"], "--until", "0")
    assert none.returncode == 0 and none.stdout.startswith("no alerts match")
    several = run("alerts", "list", "--store", demo["store"], "--json", "--severity",
                  "high,critical", "--severity", "low")
    assert {json.loads(line)["severity"] for line in several.stdout.splitlines()} <= \
        {"high", "critical", "low"}
    times = sorted(r["detected_at"] for r in rows)
    window = run("alerts", "list", "--store", demo["store"], "--json", "--since",
                 datetime.fromtimestamp(times[1], UTC).isoformat(), "--until", str(times[1]))
    assert [json.loads(line)["detected_at"] for line in window.stdout.splitlines()] == \
        [t for t in times if t == times[1]]


def test_list_into_a_pipe_that_closes_early_is_quiet(tmp_path: Path) -> None:
    """`chainwatch alerts list --json | head` on a big store: ten bytes out, no traceback."""
    import shlex
    import subprocess

    from pipeline.alert_store import AlertStore
    from pipeline.alerts import Alert
    from tests.conftest import CHAINWATCH

    path = tmp_path / "big.db"
    store = AlertStore.open(str(path))
    store.add([Alert.build(type="rug_pull", severity="high", score=0.9, subject=f"s{i}",
                           detector="d", model_version="1", evidence={"i": i},
                           source={"item_ids": [f"x{i}"]}, event_time=i, detected_at=i)
               for i in range(5000)], {("chainwatch.alerts", 0): 5000})
    store.close()
    command = (f"{shlex.quote(CHAINWATCH)} alerts list --store {shlex.quote(str(path))} "
               "--json --limit 100000 | head -c 10; exit ${PIPESTATUS[0]}")
    result = subprocess.run(["bash", "-c", command], capture_output=True, text=True,
                            timeout=120, check=False)
    assert "Traceback" not in result.stderr and "BrokenPipe" not in result.stderr, result.stderr
    assert len(result.stdout) == 10 and result.returncode == 141


def test_show_prints_evidence_records_and_a_verified_proof(demo: dict[str, Any]) -> None:
    alert_id = demo["alert_id_to_try"]
    result = run("alerts", "show", alert_id[:12], "--store", demo["store"],
                 "--audit-store", demo["audit_store"])
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.startswith(f"alert {alert_id}")
    for part in ("\nevidence\n", "\nsource\n", "  item ", "\nhistory\n",
                 "(no analyst action yet)", "\naudit  VERIFIED: leaf "):
        assert part in out
    shown = run("alerts", "show", alert_id, "--store", demo["store"], "--audit-store",
                demo["audit_store"], "--json")
    doc = json.loads(shown.stdout)
    assert doc["alert_id"] == alert_id and doc["audit"]["outcome"] == "verified"

    missing = run("alerts", "show", alert_id, "--store", demo["store"], "--audit-store",
                  str(demo["dir"] / "none.db"))
    assert missing.returncode == 0 and "audit  NO LOG: no audit log at" in missing.stdout


def test_show_says_plainly_when_an_alert_is_not_in_the_audit_log(
        demo: dict[str, Any], tmp_path: Path) -> None:
    store = tmp_path / "alerts.db"
    with AlertStore.open(str(store)) as s:
        s.add([make_alert(1)], {})
    result = run("alerts", "show", make_alert(1).alert_id, "--store", str(store),
                 "--audit-store", demo["audit_store"])
    assert result.returncode == 0, result.stderr
    assert "audit  NOT IN LOG: not in the audit log" in result.stdout


def test_export_writes_jsonl_csv_and_parquet(demo: dict[str, Any], tmp_path: Path) -> None:
    ids = {json.loads(line)["alert_id"] for line in run(
        "alerts", "list", "--json", "--store", demo["store"]).stdout.splitlines()}
    for fmt in ("jsonl", "csv", "parquet"):
        out = tmp_path / f"alerts.{fmt}"
        result = run("alerts", "export", "--format", fmt, "--out", str(out), "--store",
                     demo["store"])
        assert result.returncode == 0, result.stderr
        assert f"{len(ids)} alerts to {out}" in result.stderr
        if fmt == "jsonl":  # exactly what list --json prints
            listed = run("alerts", "list", "--json", "--store", demo["store"]).stdout
            assert sorted(out.read_text().splitlines()) == sorted(listed.splitlines())
            got = {json.loads(line)["alert_id"] for line in out.read_text().splitlines()}
        elif fmt == "csv":
            with out.open() as f:
                rows = list(csv.DictReader(f))
            assert all(json.loads(r["evidence"]) for r in rows)
            got = {r["alert_id"] for r in rows}
        else:
            got = set(pq.read_table(out).column("alert_id").to_pylist())
        assert got == ids, fmt
    only = tmp_path / "rug.csv"
    run("alerts", "export", "--format", "csv", "--out", str(only), "--type", "rug_pull",
        "--store", demo["store"])
    with only.open() as f:
        assert {r["type"] for r in csv.DictReader(f)} == {"rug_pull"}


def test_ack_without_kafka_stores_the_status_and_says_the_label_is_not_out(
        demo: dict[str, Any], tmp_path: Path) -> None:
    store = tmp_path / "alerts.db"
    with AlertStore.open(str(store)) as s:
        s.add([make_alert(i) for i in range(3)], {})
    alert_id = make_alert(2).alert_id
    acked = run("alerts", "ack", alert_id[:10], "--status", "acknowledged", "--note", "seen",
                "--store", str(store))
    assert acked.returncode == 0 and "status acknowledged" in acked.stdout
    down = run("alerts", "ack", alert_id, "--status", "confirmed", "--store", str(store),
               "--bootstrap", f"127.0.0.1:{free_port()}")
    assert down.returncode == 1
    assert "the status is stored, but the label was NOT published" in down.stdout
    listed = run("alerts", "list", "--status", "confirmed", "--json", "--store", str(store))
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [(r["alert_id"], r["status"], r["note"]) for r in rows] == [
        (alert_id, "confirmed", "seen")]
    shown = run("alerts", "show", alert_id, "--store", str(store), "--audit-store",
                demo["audit_store"])
    assert "acknowledged: seen" in shown.stdout and "  confirmed" in shown.stdout


def test_ack_publishes_verdicts_as_labels(settings: Settings, tmp_path: Path,
                                          consumer_factory: Callable[..., KafkaConsumer]) -> None:
    ensure_topics(settings)
    store = tmp_path / "alerts.db"
    fraud, fine = make_alert(1), make_alert(2)
    with AlertStore.open(str(store)) as s:
        s.add([fraud, fine], {})
    env = cli_env(settings) | {"CHAINWATCH_ALERTS_STORE": str(store)}
    for alert, status in ((fraud, "confirmed"), (fine, "false_positive")):
        result = run("alerts", "ack", alert.alert_id, "--status", status, env=env)
        assert result.returncode == 0, result.stdout + result.stderr
        assert f"to {settings.topics.labels}" in result.stdout
    got = consume_all(consumer_factory(settings.topics.labels), 2)
    labels = {m.key: Label.from_dict(json.loads(m.value)) for m in got}
    for alert, value in ((fraud, 1), (fine, 0)):
        label = labels[alert.subject.encode()]
        assert (label.subject, label.label, label.source) == (alert.subject, value, "analyst")
        assert label.block_number == label.released_block == alert.event_time


def test_tail_prints_the_newest_and_follows(tmp_path: Path) -> None:
    store = tmp_path / "alerts.db"
    with AlertStore.open(str(store)) as s:
        s.add([make_alert(i) for i in range(5)], {})
    last = run("alerts", "tail", "-n", "2", "--json", "--store", str(store))
    assert [json.loads(line)["seq"] for line in last.stdout.splitlines()] == [4, 5]
    follow = subprocess.Popen([CHAINWATCH, "alerts", "tail", "-f", "-n", "1", "--interval",
                               "0.2", "--json", "--store", str(store)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert follow.stdout is not None
        assert json.loads(follow.stdout.readline())["seq"] == 5
        with AlertStore.open(str(store)) as s:
            s.add([make_alert(7), make_alert(8)], {})
        assert json.loads(follow.stdout.readline())["alert_id"] == make_alert(7).alert_id
        assert json.loads(follow.stdout.readline())["alert_id"] == make_alert(8).alert_id
        time.sleep(0.3)
    finally:
        follow.send_signal(signal.SIGINT)
        _, err = follow.communicate(timeout=10)
    assert follow.returncode == 0, err


@pytest.mark.parametrize(("args", "says"), [
    (["list", "--severity", "huge"], "--severity 'huge' is not one of"),
    (["list", "--status", "fraud"], "--status 'fraud' is not one of"),
    (["list", "--since", "yesterday"], "is neither unix seconds nor an ISO time"),
    (["list", "--since", "2024-02-01", "--until", "2024-01-01"], "--since is after --until"),
    (["list", "--limit", "0"], "must be at least 1"),
    (["list", "--store", "mysql://u:pw@h/db"], "scheme 'mysql' is not supported"),
    (["show", "abc", "--store", "{tmp}/none.db"], "no alert store at"),
    (["show", "abc", "--store", "{tmp}"], "is a directory"),
    (["ack", "abc", "--status", "fraud"], "invalid choice: 'fraud'"),
    (["export", "--format", "xml", "--out", "x"], "invalid choice: 'xml'"),
    (["export", "--format", "csv", "--out", "{tmp}/no/such/dir/a.csv"], "does not exist"),
    (["tail", "--interval", "0"], "must be > 0"),
])
def test_bad_arguments_are_one_line_and_exit_2(args: list[str], says: str,
                                                tmp_path: Path) -> None:
    result = run("alerts", *[a.replace("{tmp}", str(tmp_path)) for a in args])
    assert result.returncode == 2, result.stdout + result.stderr
    assert says in result.stderr and len(result.stderr.strip().splitlines()) == 1, \
        result.stderr
    assert "Traceback" not in result.stderr and "pw" not in result.stderr
