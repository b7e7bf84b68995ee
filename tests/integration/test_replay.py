"""Replay into the real broker, run through the CLI as a user types it."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from kafka import KafkaConsumer

from pipeline.dlq import decode_letter
from pipeline.settings import Settings
from tests.conftest import CHAINWATCH, cli_env, consume_all

pytestmark = pytest.mark.integration

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
UNISWAP_ROWS = 436_511


def _replay(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CHAINWATCH, "produce", "replay", *args, "--json"],
                          capture_output=True, text=True, env=cli_env(settings), timeout=600,
                          check=False)


def _dex_items(consumer: KafkaConsumer, expected: int) -> list[tuple[bytes, str, str]]:
    """(key, pool, item id) of every DEX record, polled until ``expected`` or quiet."""
    out: list[tuple[bytes, str, str]] = []
    quiet_since = time.monotonic()
    while len(out) < expected or time.monotonic() - quiet_since < 2:
        batch = consumer.poll(timeout_ms=500, max_records=20_000)
        if not batch:
            if len(out) >= expected or time.monotonic() - quiet_since > 30:
                break
            continue
        quiet_since = time.monotonic()
        for messages in batch.values():
            for m in messages:
                value = orjson.loads(m.value)
                out.append((m.key, value["pool_address"], value["item_id"]))
    return out


@pytest.fixture(scope="module")
def uniswap_item_ids() -> set[str]:
    import pyarrow.parquet as pq

    table = pq.read_table(DATA / "uniswap-v2-2021" / "events.parquet",
                          columns=["transaction_hash", "log_index"])
    return {f"log_{h}_{i}" for h, i in zip(table.column(0).to_pylist(),
                                             table.column(1).to_pylist(), strict=True)}


def test_full_uniswap_replay_puts_every_row_on_the_dex_topic_keyed_by_pool(
        settings: Settings, consumer_factory: Callable[..., KafkaConsumer],
        uniswap_item_ids: set[str]) -> None:
    result = _replay(settings, str(DATA / "uniswap-v2-2021"), "--format", "uniswap-v2")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["read"] == summary["produced"] == UNISWAP_ROWS
    assert summary["dead_lettered"] == summary["skipped"] == summary["out_of_order"] == 0
    items = _dex_items(consumer_factory(settings.topics.dex), UNISWAP_ROWS)
    assert len(items) == UNISWAP_ROWS
    assert all(key == pool.encode() for key, pool, _ in items)
    assert {item for _, _, item in items} == uniswap_item_ids


def test_replay_killed_halfway_resumes_from_its_cursor(
        settings: Settings, tmp_path: Path, consumer_factory: Callable[..., KafkaConsumer],
        uniswap_item_ids: set[str]) -> None:
    cursor = tmp_path / "uni.cursor"
    args = [CHAINWATCH, "produce", "replay", str(DATA / "uniswap-v2-2021"), "--format",
            "uniswap-v2", "--cursor", str(cursor), "--json"]
    with subprocess.Popen(args, env=cli_env(settings), stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL) as proc:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if cursor.exists() and json.loads(cursor.read_text())["next_row"] > UNISWAP_ROWS / 3:
                break
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    killed_at = json.loads(cursor.read_text())["next_row"]
    assert 1 < killed_at < UNISWAP_ROWS, "the kill must land mid-run"

    result = _replay(settings, str(DATA / "uniswap-v2-2021"), "--format", "uniswap-v2",
                     "--cursor", str(cursor))
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["resumed_from_row"] == killed_at
    assert summary["finished"] and summary["read"] == UNISWAP_ROWS - killed_at + 1

    items = _dex_items(consumer_factory(settings.topics.dex), UNISWAP_ROWS)
    ids = [item for _, _, item in items]
    assert set(ids) == uniswap_item_ids  # every item at least once, and nothing else
    assert len(ids) >= UNISWAP_ROWS
    again = _replay(settings, str(DATA / "uniswap-v2-2021"), "--format", "uniswap-v2",
                    "--cursor", str(cursor))
    assert json.loads(again.stdout)["read"] == 0  # a finished cursor replays nothing


def test_blte_labels_are_delayed_and_survive_a_resume(
        settings: Settings, tmp_path: Path,
        consumer_factory: Callable[..., KafkaConsumer]) -> None:
    cursor = tmp_path / "blte.cursor"
    source = str(DATA / "blte-ethereum-scam-tx" / "transactions.csv")
    first = _replay(settings, source, "--format", "blte", "--limit", "1500",
                    "--label-delay-blocks", "2000", "--cursor", str(cursor))
    assert first.returncode == 0, first.stderr
    # stop at row 3000 by the block of row 3000
    second = _replay(settings, source, "--format", "blte", "--limit", "1500",
                     "--label-delay-blocks", "2000", "--cursor", str(cursor))
    s1, s2 = json.loads(first.stdout), json.loads(second.stdout)
    assert s1["read"] == s2["read"] == 1500
    assert 0 < s1["labels"] < 1500  # some labels still wait for stream time to pass

    labels = [orjson.loads(m.value) for m in
              consume_all(consumer_factory(settings.topics.labels), s1["labels"] + s2["labels"])]
    txs = {orjson.loads(m.value)["item_id"] for m in
           consume_all(consumer_factory(settings.topics.transactions), 3000)}
    assert len(txs) == 3000
    assert all(int(lbl["released_block"]) == int(lbl["block_number"]) + 2000 for lbl in labels)
    subjects = [lbl["subject"] for lbl in labels]
    assert len(subjects) == len(set(subjects))  # no label sent twice across the resume
    assert set(subjects) <= txs
    # every label whose release block the stream has passed has been sent
    last_block = max(int(lbl["block_number"]) for lbl in labels)
    assert last_block > 0


def test_bad_rows_go_to_the_dlq_with_file_line_and_reason(
        settings: Settings, tmp_path: Path,
        consumer_factory: Callable[..., KafkaConsumer]) -> None:
    path = tmp_path / "transactions.csv"
    good = ("0x" + "ab" * 32 + ",1,100,1600000000,0,0x" + "11" * 20 + ",0x" + "22" * 20
            + ",5,21000,1000,0x")
    path.write_text(
        "hash,nonce,block_number,block_timestamp,transaction_index,from_address,to_address,"
        "value,gas,gas_price,input\n"
        f"{good}\n"
        f"{good.replace(',5,', ',-5,')}\n"
        "0x12,too,few\n"
        f"{good.replace('0xab', '0xcd')}\n")
    result = _replay(settings, str(path), "--format", "transactions")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert (summary["read"], summary["produced"], summary["dead_lettered"]) == (4, 2, 2)
    assert summary["dead_letter_reasons"] == {"bad_row": 1, "negative_amount": 1}
    letters = sorted((decode_letter(m.value) for m in
                      consume_all(consumer_factory(settings.topics.dlq), 2)),
                     key=lambda d: d["source"]["line"])
    assert [d["source"]["line"] for d in letters] == [3, 4]
    assert all(d["source"]["file"] == str(path) for d in letters)
    assert letters[1]["original"] == b"0x12,too,few"
    assert "'value'" in letters[0]["detail"]


def _tx_line(block: int) -> bytes:
    return (f"0x{block:064x},0,{block},{1_600_000_000 + 12 * block},0,0x{'11' * 20},"
            f"0x{'22' * 20},1,21000,1,0x").encode()


def _tx_json(block: int) -> bytes:
    return orjson.dumps({"hash": f"0x{block:064x}", "nonce": 0, "block_number": block,
                         "block_timestamp": 1_600_000_000 + 12 * block, "transaction_index": 0,
                         "from_address": "0x" + "11" * 20, "to_address": "0x" + "22" * 20,
                         "value": 1, "gas": 21000, "gas_price": 1})


@pytest.mark.parametrize("kind", ["csv", "jsonl"])
def test_lines_not_utf8_or_malformed_go_to_the_dlq_and_every_good_row_is_produced(
        kind: str, settings: Settings, tmp_path: Path,
        consumer_factory: Callable[..., KafkaConsumer]) -> None:
    spoiled = _tx_line(101).replace(b",0x2222", b",0x\xff\xfe2222")
    if kind == "csv":
        lines = [b"hash,nonce,block_number,block_timestamp,transaction_index,from_address,"
                 b"to_address,value,gas,gas_price,input",
                 _tx_line(100), spoiled, _tx_line(102), b"0x12,\xff,few", b"0x34,too,few",
                 _tx_line(103), _tx_line(104)]
        bad = {3: ("not_utf8", spoiled), 5: ("not_utf8", b"0x12,\xff,few"),
               6: ("bad_row", b"0x34,too,few")}
    else:
        lines = [_tx_json(100), _tx_json(101).replace(b'"0x2222', b'"0x\xff\xfe2222'),
                 _tx_json(102), b"not json", b"{\"a\": \"\xff\"", _tx_json(103),
                 _tx_json(104)]
        bad = {2: ("not_utf8", lines[1]), 4: ("bad_row", b"not json"),
               5: ("not_utf8", lines[4])}
    path = tmp_path / f"transactions.{kind}"
    path.write_bytes(b"\n".join(lines) + b"\n")

    result = _replay(settings, str(path), "--format", "transactions")

    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    summary = json.loads(result.stdout)
    assert (summary["read"], summary["produced"], summary["dead_lettered"],
            summary["skipped"]) == (7, 4, 3, 0)
    reasons = [reason for reason, _ in bad.values()]
    assert summary["dead_letter_reasons"] == {r: reasons.count(r) for r in set(reasons)}
    letters = [decode_letter(m.value) for m in consume_all(consumer_factory(settings.topics.dlq),
                                                            3)]
    assert {d["source"]["line"]: (d["reason"], d["original"]) for d in letters} == bad
    assert all(d["source"]["file"] == str(path) for d in letters)
    assert all("UTF-8" in d["detail"] for d in letters if d["reason"] == "not_utf8")
    produced = consume_all(consumer_factory(settings.topics.transactions), 4)
    assert sorted(orjson.loads(m.value)["block_number"] for m in produced) == [
        100, 102, 103, 104]


@pytest.mark.parametrize(("args", "message"), [
    (["/nonexistent/file.csv", "--format", "transactions"], "does not exist"),
    ([".", "--format", "nope"], "unknown format"),
    (["/etc/hostname", "--format", "transactions"], "not a .csv, .jsonl or .parquet"),
])
def test_bad_source_is_one_line_exit_2(settings: Settings, args: list[str],
                                       message: str) -> None:
    result = _replay(settings, *args)
    assert result.returncode == 2
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_unreadable_file_is_one_line_exit_2(settings: Settings, tmp_path: Path) -> None:
    path = tmp_path / "broken.parquet"
    path.write_bytes(b"this is not parquet")
    result = _replay(settings, str(path), "--format", "transactions")
    assert result.returncode == 2, result.stderr
    assert "cannot read" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def _transactions_csv(path: Path, blocks: range, seconds_per_block: int) -> Path:
    header = ("hash,nonce,block_number,block_timestamp,transaction_index,from_address,"
              "to_address,value,gas,gas_price,input\n")
    rows = [f"0x{b:064x},0,{b},{1_600_000_000 + seconds_per_block * (b - blocks[0])},0,"
            f"0x{'11' * 20},0x{'22' * 20},1,21000,1,0x\n" for b in blocks]
    path.write_text(header + "".join(rows))
    return path


def test_block_range_and_limit(settings: Settings, tmp_path: Path) -> None:
    path = _transactions_csv(tmp_path / "tx.csv", range(100, 120), 12)
    ranged = json.loads(_replay(settings, str(path), "--format", "transactions",
                                "--start-block", "105", "--end-block", "109").stdout)
    assert ranged["produced"] == 5  # blocks 105..109
    assert ranged["skipped"] == 6  # 100..104 before the range, then 110 ends the run
    assert ranged["read"] == ranged["produced"] + ranged["dead_lettered"] + ranged["skipped"]
    limited = json.loads(_replay(settings, str(path), "--format", "transactions",
                                 "--limit", "7").stdout)
    assert (limited["read"], limited["produced"], limited["finished"]) == (7, 7, False)


def test_speed_paces_by_block_timestamps(settings: Settings, tmp_path: Path) -> None:
    path = _transactions_csv(tmp_path / "tx.csv", range(100, 111), 2)  # 20 s of chain time
    started = time.monotonic()
    result = _replay(settings, str(path), "--format", "transactions", "--speed", "10x")
    took = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    assert took >= 2.0  # 20 s of blocks at 10x take at least 2 s
    bad = _replay(settings, str(path), "--format", "transactions", "--speed", "fast")
    assert bad.returncode == 2 and "max, 1x or Nx" in bad.stderr
