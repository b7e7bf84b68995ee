"""The ``chainwatch`` command run as a user types it, in a subprocess."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest

from pipeline.alert_store import AlertStore
from pipeline.alerts import Alert
from tests.conftest import CHAINWATCH

pytestmark = pytest.mark.e2e



def run(*args: str, env: dict[str, str] | None = None,
        timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CHAINWATCH, *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})}, check=False)


def tansu_processes(port: str = "") -> set[int]:
    """PIDs of running Tansu brokers (listening on ``port``, if given), read from /proc."""
    pids = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if b"tansu" in cmdline and b"broker" in cmdline and f":{port}".encode() in cmdline:
                pids.add(int(entry.name))
    return pids


def test_demo_json_has_the_summary_and_leaves_no_broker() -> None:
    result = run("demo", "--json", "--seed", "4242", "--blocks", "300")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)  # stdout is exactly one JSON object
    for key in ("events_produced", "events_scored", "alerts_by_type", "elapsed_s",
                "events_per_s", "bootstrap"):
        assert key in summary
    assert summary["events_scored"] == summary["events_produced"] > 1000
    assert summary["alerts_by_type"].get("pump_and_dump", 0) >= 1
    assert summary["events_per_s"] > 0
    evaluation = summary["evaluation"]  # graded against the campaigns' ground truth
    assert set(evaluation) == {"pump_and_dump", "rug_pull", "wash_trading",
                               "anomalous_transfer"}
    pump, rug = evaluation["pump_and_dump"], evaluation["rug_pull"]
    assert pump["precision"] >= 0.95 and pump["recall"] >= 0.95
    assert 0 <= pump["median_delay_blocks"] <= 10  # blocks after the pump began
    assert rug["recall"] >= 0.95 and abs(rug["median_delay_blocks"]) <= 1  # vs the drain
    assert "demo:" in result.stderr  # live progress went to stderr
    assert summary["alert_store"] == "chainwatch-data/demo/alerts.db"  # kept for `alerts`
    with AlertStore.open(summary["alert_store"], create=False) as store:
        assert store.count() == summary["alerts_stored"] == sum(
            summary["alerts_by_type"].values())
        to_try = store.get(summary["alert_id_to_try"])
        assert to_try is not None and to_try.alert_id == summary["alert_id_to_try"]
    port = summary["bootstrap"].rpartition(":")[2]
    time.sleep(0.5)
    assert tansu_processes(port) == set()
    with socket.socket() as s:  # its port is free again
        s.bind(("127.0.0.1", int(port)))


def test_demo_human_summary() -> None:
    result = run("demo", "--blocks", "120", "--seed", "5", "--quiet")
    assert result.returncode == 0, result.stderr
    assert "events scored" in result.stdout
    assert "alerts" in result.stdout
    assert "chainwatch alerts show " in result.stdout  # an alert to try, and how


def test_help_lists_working_subcommands_with_examples() -> None:
    result = run("--help")
    assert result.returncode == 0
    for command in ("demo", "broker", "topics"):
        assert command in result.stdout
        sub = run(command, "--help")
        assert sub.returncode == 0
        assert "example" in sub.stdout


@pytest.mark.parametrize("args", [
    ("demo", "--blocks", "zero"),
    ("demo", "--blocks", "-3"),
    ("broker", "--port", "99999"),
    ("no-such-command",),
])
def test_bad_argument_is_one_line_without_traceback(args: tuple[str, ...]) -> None:
    result = run(*args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "error" in lines[0] and "--help" in lines[0]
    assert "Traceback" not in result.stderr


def test_missing_broker_binary_is_one_line() -> None:
    result = run("broker", env={"CHAINWATCH_TANSU_BIN": "/nonexistent/tansu"})
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert "CHAINWATCH_TANSU_BIN" in result.stderr


def test_taken_port_is_one_line() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        result = run("broker", "--port", str(port))
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "already in use" in result.stderr
    assert "Traceback" not in result.stderr


def test_broker_runs_until_sigterm_and_prints_bootstrap() -> None:
    with subprocess.Popen([CHAINWATCH, "broker"], stdout=subprocess.PIPE,
                          stderr=subprocess.DEVNULL, text=True) as proc:
        assert proc.stdout is not None
        bootstrap = proc.stdout.readline().strip()
        host, _, port = bootstrap.rpartition(":")
        assert host == "127.0.0.1" and port.isdigit()
        topics = run("topics", "--bootstrap", bootstrap)
        assert topics.returncode == 0, topics.stderr
        assert "chain.dex" in topics.stdout and "exists" in topics.stdout
        proc.terminate()
        assert proc.wait(timeout=15) == 0
    with socket.socket() as s:  # the port is free again: the broker is gone
        s.bind(("127.0.0.1", int(port)))


def test_unreachable_bootstrap_is_one_line() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = run("topics", "--bootstrap", f"127.0.0.1:{port}", timeout=120)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert "cannot reach Kafka" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_evaluate_synth_writes_a_report(tmp_path: Path) -> None:
    out = tmp_path / "report"
    result = run("evaluate", "synth", "--seed", "101", "--blocks", "800", "--out", str(out),
                 "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["events"] > 20_000
    assert summary["by_type"]["pump_and_dump"]["recall"] >= 0.95
    for name in ("summary.json", "report.html", "precision_recall.png", "detection_delay.png",
                 "timeline_1.png"):
        assert (out / name).stat().st_size > 0, name
    assert "pump_and_dump" in (out / "report.html").read_text()
    graded = [Alert.from_json(line) for line in (out / "alerts.jsonl").read_bytes().splitlines()]
    assert len(graded) == sum(summary["alerts_by_type"].values()) > 0
    assert Counter(a.type for a in graded) == summary["alerts_by_type"]
    assert [a.event_time for a in graded] == sorted(a.event_time for a in graded)
    # the run's alerts are also in its alert store, as the alert sink keeps them
    assert summary["alert_store"] == str(out / "alerts.db")
    assert summary["alerts_stored"] == len(graded)
    listed = run("alerts", "list", "--store", str(out / "alerts.db"), "--limit", "100000",
                 "--json")
    assert listed.returncode == 0, listed.stderr
    assert sorted(json.loads(line)["alert_id"] for line in listed.stdout.splitlines()) == \
        sorted(a.alert_id for a in graded)


def test_evaluate_blte_reports_prequential_auc(tmp_path: Path) -> None:
    data = Path(__file__).resolve().parents[2].parent / "shared" / "data"
    result = run("evaluate", "blte", str(data / "blte-ethereum-scam-tx" / "transactions.csv"),
                 "--limit", "8000", "--out", str(tmp_path / "blte"), "--json")
    assert result.returncode == 0, result.stderr
    supervised = json.loads(result.stdout)["supervised"]
    assert supervised["labels_tested"] > 1000
    assert 0.0 <= supervised["roc_auc"] <= 1.0 and 0.0 <= supervised["pr_auc"] <= 1.0


def test_evaluate_uniswap_grades_rug_pull_and_rug_risk(tmp_path: Path) -> None:
    data = Path(__file__).resolve().parents[2].parent / "shared" / "data"
    out = tmp_path / "uni"
    result = run("evaluate", "uniswap-v2", str(data / "uniswap-v2-2021"), "--limit", "60000",
                 "--out", str(out), "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["by_type"]["rug_pull"]["events"] == summary["crashes"]["count"] > 0
    by_kind = summary["rug_pull_by_event_kind"]
    assert set(by_kind) == {"liquidity_drain", "price_crash"}
    assert sum(k["events"] for k in by_kind.values()) == summary["crashes"]["count"]
    assert isinstance(summary["rug_pull_alerts_without_priced_weth"], int)
    page = (out / "report.html").read_text()
    if "rug_risk" not in summary:  # the settings have no rug_risk rule
        assert "rug_risk" in summary["rug_risk_note"]
        return
    risk = summary["rug_risk"]
    assert risk["universe_pools"] >= risk["event_pools"] > 0
    assert risk["healthy_pools"] > 0 and risk["healthy_pools_in_universe"] == 0
    for half in ("tune", "report", "all"):
        assert set(risk[half]) == {"by_age", "before_event", "alerts"}
        assert set(risk[half]["by_age"]) == set(risk[half]["before_event"]) == \
            {"1h", "6h", "24h"}
    assert risk["tune"]["alerts"]["event_pools"] + risk["report"]["alerts"]["event_pools"] \
        == risk["all"]["alerts"]["event_pools"] == risk["event_pools"]
    assert "<h2>rug_risk</h2>" in page
    assert (out / "rug_risk_roc_by_age.png").stat().st_size > 0


def test_evaluate_needs_a_path_for_datasets(tmp_path: Path) -> None:
    result = run("evaluate", "blte", "--out", str(tmp_path))
    assert result.returncode == 2
    assert "needs the dataset PATH" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_evaluate_pumps_grades_real_announced_pumps(tmp_path: Path) -> None:
    """Three real pumps' windows (two big ones, one that barely moved), as a folder of the
    shared layout, through the CLI: replay and scoring on a real broker, graded per pump."""
    import pandas as pd  # only this test needs it

    data = Path(__file__).resolve().parents[2].parent / "shared" / "data" / \
        "pump-telegram-binance"
    chosen = ["GVT_20210220T1700", "VIB_20210905T1700", "NAS_20220201T1500"]
    folder = tmp_path / "pumps"
    folder.mkdir()
    trades = pd.read_parquet(data / "trades.parquet")
    trades[trades["pump_id"].isin(chosen)].to_parquet(folder / "trades.parquet", index=False)
    pumps = pd.read_csv(data / "pumps.csv")
    pumps[pumps["pump_id"].isin(chosen)].to_csv(folder / "pumps.csv", index=False)
    out = tmp_path / "report"
    result = run("evaluate", "pumps", str(folder), "--out", str(out), "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    rows = {row["pump_id"]: row for row in summary["pumps"]}
    assert set(rows) == set(chosen)
    for big in chosen[:2]:  # the 80 % and 62 % pumps: caught within seconds, before the peak
        assert rows[big]["big"] and rows[big]["detected"] and rows[big]["before_peak"]
        assert 0 <= rows[big]["delay_s"] <= 25
    assert not rows["NAS_20220201T1500"]["big"]
    assert summary["all"]["false_alerts"]["per_48h_lead_in"] <= 1
    for size in ("5", "15", "25"):
        chunks = summary["all"]["chunks"][size]
        assert chunks["unscored"] == 0 and chunks["tp"] > 0  # every chunk got its score
    assert summary["events"] == summary["trades"] + len(chosen)  # the trades and 3 labels
    graded = [Alert.from_json(line) for line in (out / "alerts.jsonl").read_bytes().splitlines()]
    assert Counter(a.type for a in graded) == summary["alerts_by_type"]
    assert all("timestamp_ms" in a.evidence for a in graded if a.type == "pump_and_dump")
    for name in ("summary.json", "report.html", "pumps.csv", "delays.png", "chunks.png"):
        assert (out / name).stat().st_size > 0, name
