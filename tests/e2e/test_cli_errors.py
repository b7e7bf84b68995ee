"""Mistakes a user makes, typed as they make them: each is one line on stderr and exit
status 2, before any work starts (no broker started, nothing produced, nothing created)."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import CHAINWATCH, free_port

pytestmark = pytest.mark.e2e

QUICK_S = 20.0  # well below a run's duration (and below the 60 s these used to take)


def chainwatch(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None,
               timeout: float = 60) -> tuple[subprocess.CompletedProcess[str], float]:
    """The command as typed, and how long it took."""
    started = time.monotonic()
    result = subprocess.run([CHAINWATCH, *args], capture_output=True, text=True, cwd=cwd,
                            timeout=timeout, env={**os.environ, **(env or {})}, check=False)
    return result, time.monotonic() - started


def one_line_error(result: subprocess.CompletedProcess[str], *expected: str) -> str:
    """The single stderr line of a failed command, checked to contain ``expected``."""
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for text in expected:
        assert text in lines[0], lines[0]
    assert result.stdout == "", result.stdout
    return lines[0]


# -- evaluate --out ----------------------------------------------------------------------------


def test_evaluate_out_that_is_a_file_fails_before_the_run(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("# notes\n")
    result, elapsed = chainwatch("evaluate", "synth", "--blocks", "50", "--out", "README.md",
                                 cwd=tmp_path)
    one_line_error(result, "chainwatch evaluate: error: --out README.md is a file; give a "
                           "directory (it will be created)")
    assert elapsed < QUICK_S, elapsed
    assert readme.read_text() == "# notes\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["README.md"]


def test_evaluate_out_in_an_unwritable_place_fails_before_the_run(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not a directory\n")
    result, elapsed = chainwatch("evaluate", "synth", "--blocks", "50",
                                 "--out", "notes.txt/report", cwd=tmp_path)
    one_line_error(result, "--out notes.txt/report cannot be created", "notes.txt is a file")
    assert elapsed < QUICK_S, elapsed


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only directory")
def test_evaluate_out_in_a_read_only_directory_fails_before_the_run(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    try:
        result, elapsed = chainwatch("evaluate", "synth", "--blocks", "50",
                                     "--out", str(locked / "report"))
    finally:
        locked.chmod(0o755)
    one_line_error(result, "cannot be written", "no write permission")
    assert elapsed < QUICK_S, elapsed
    assert list(locked.iterdir()) == []


# -- produce replay of a file that is not of its --format ----------------------------------------


GARBAGE = {
    "garbage.csv": b"this is not\na csv of anything\n",
    "binary.csv": bytes(range(256)) * 8,
    "garbage.parquet": b"not parquet at all",
    "garbage.jsonl": b"hello\nworld\n",
}


@pytest.mark.parametrize("fmt", ["transactions", "blte"])
@pytest.mark.parametrize("name", sorted(GARBAGE))
def test_replay_of_a_file_not_of_its_format_is_one_line_before_producing(
        tmp_path: Path, name: str, fmt: str) -> None:
    (tmp_path / name).write_bytes(GARBAGE[name])
    # nothing listens there: reaching the broker would be a different error, after 10 s
    result, elapsed = chainwatch("produce", "replay", name, "--format", fmt,
                                 "--bootstrap", f"127.0.0.1:{free_port()}", cwd=tmp_path)
    line = one_line_error(result, "chainwatch produce: error: ")
    assert name in line, line
    assert "cannot reach Kafka" not in line
    assert "check" in line  # says what to do
    assert elapsed < QUICK_S, elapsed


@pytest.mark.parametrize(("fmt", "missing"), [
    ("transactions", "missing columns hash, nonce, block_number, block_timestamp"),
    ("blte", "missing columns block_number, block_timestamp, value, gas, gas_price, class"),
])
def test_replay_of_a_csv_without_the_format_columns_names_them(
        tmp_path: Path, fmt: str, missing: str) -> None:
    (tmp_path / "garbage.csv").write_text("this is not\na csv of anything\n")
    result, _ = chainwatch("produce", "replay", "garbage.csv", "--format", fmt,
                           "--bootstrap", f"127.0.0.1:{free_port()}", cwd=tmp_path)
    one_line_error(result, "garbage.csv: not a CSV of", missing, "check --format")


# -- security protocol against a plaintext broker ------------------------------------------------


def test_sasl_ssl_against_a_plaintext_broker_times_out_in_one_line(
        kafka_bootstrap: str) -> None:
    result, elapsed = chainwatch("topics", "--bootstrap", kafka_bootstrap,
                                 env={"CHAINWATCH_SECURITY_PROTOCOL": "SASL_SSL"})
    line = one_line_error(result, "chainwatch topics: error: ", "Kafka", kafka_bootstrap)
    assert "SASL_SSL" in line or "cannot reach Kafka" in line, line
    assert elapsed < 30, elapsed


# -- bad arguments -------------------------------------------------------------------------------


@pytest.mark.parametrize("rate", ["0", "-5", "0.0", "nan"])
def test_rate_must_be_positive(rate: str) -> None:
    result, _ = chainwatch("produce", "synth", "--blocks", "10", f"--rate={rate}",
                           "--bootstrap", f"127.0.0.1:{free_port()}")
    one_line_error(result, "chainwatch produce synth: error: argument --rate: must be > 0 "
                           "(events per second)", "--help")


@pytest.mark.parametrize(("command", "seconds"), [
    (("score",), "0"), (("score",), "-1"), (("score",), "nan"),
    (("alerts", "notify"), "0"), (("alerts", "notify"), "-1")])
def test_session_timeout_must_be_positive(command: tuple[str, ...], seconds: str) -> None:
    result, _ = chainwatch(*command, f"--session-timeout={seconds}",
                           "--bootstrap", f"127.0.0.1:{free_port()}")
    one_line_error(result, f"chainwatch {' '.join(command)}: error: argument --session-timeout: "
                           "must be > 0 (seconds)", "--help")


def test_campaign_rates_must_not_be_negative() -> None:
    result, _ = chainwatch("produce", "synth", "--campaigns", "rug_pull=-1",
                           "--bootstrap", f"127.0.0.1:{free_port()}")
    one_line_error(result, "chainwatch produce synth: error: argument --campaigns:",
                   "rate must be >= 0")


def test_start_block_after_end_block_is_a_bad_argument(tmp_path: Path) -> None:
    path = tmp_path / "tx.csv"
    path.write_text("hash,nonce,block_number,block_timestamp,transaction_index,from_address,"
                    "to_address,value,gas,gas_price,input\n")
    result, _ = chainwatch("produce", "replay", str(path), "--format", "transactions",
                           "--start-block", "200", "--end-block", "100",
                           "--bootstrap", f"127.0.0.1:{free_port()}")
    one_line_error(result, "chainwatch produce replay: error: --start-block 200 is after "
                           "--end-block 100", "--help")


def test_evaluate_synth_takes_no_path(tmp_path: Path) -> None:
    result, elapsed = chainwatch("evaluate", "synth", "data.csv", "--out", "report",
                                 cwd=tmp_path)
    one_line_error(result, "chainwatch evaluate: error: synth takes no PATH", "data.csv",
                   "--help")
    assert elapsed < QUICK_S, elapsed
    assert list(tmp_path.iterdir()) == []


# -- --truth and --cursor create no directories ---------------------------------------------------


def test_truth_in_a_missing_directory_is_refused_not_created(tmp_path: Path) -> None:
    result, elapsed = chainwatch("produce", "synth", "--blocks", "10",
                                 "--truth", "runs/7/truth.jsonl",
                                 "--bootstrap", f"127.0.0.1:{free_port()}", cwd=tmp_path)
    one_line_error(result, "--truth runs/7/truth.jsonl: directory runs/7 does not exist; "
                           "create it first")
    assert elapsed < QUICK_S, elapsed  # before connecting: nothing listens on that port
    assert list(tmp_path.iterdir()) == []


def test_cursor_in_a_missing_directory_is_refused_not_created(tmp_path: Path) -> None:
    path = tmp_path / "tx.csv"
    path.write_text("hash,nonce,block_number,block_timestamp,transaction_index,from_address,"
                    "to_address,value,gas,gas_price,input\n")
    result, elapsed = chainwatch("produce", "replay", "tx.csv", "--format", "transactions",
                                 "--cursor", "state/tx.cursor",
                                 "--bootstrap", f"127.0.0.1:{free_port()}", cwd=tmp_path)
    one_line_error(result, "--cursor state/tx.cursor: directory state does not exist; "
                           "create it first")
    assert elapsed < QUICK_S, elapsed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tx.csv"]
