"""The trades replay format: ccxt rows from CSV, JSONL and Parquet give the same trades; the
pump-telegram-binance folder keys trades by pump and releases one label per pump in trade
time, once, also across a resume; bad rows are dead-lettered and nothing is lost."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, cast

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline import codec
from pipeline.dlq import decode_letter
from pipeline.errors import SourceError
from pipeline.records import Label, Trade
from pipeline.settings import Topics
from producers.cursor import Position
from producers.files import read_rows
from producers.formats import FORMATS, Trades, make_format
from producers.handoff import Outbox
from producers.replay import ReplayJob, ReplayOptions, ReplaySummary, plan_replay
from tests.conftest import CHAINWATCH, free_port

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
PUMPS = DATA / "pump-telegram-binance"
T0 = 1_580_400_000_000  # 2020-01-30T16:00:00Z in ms
TOPICS = Topics()

# ccxt fetch_trades rows, as its dicts hold them (the `info` and `fee` dicts left out)
CCXT = [
    {"id": "1001", "order": None, "timestamp": T0, "datetime": "2020-01-30T16:00:00.000Z",
     "symbol": "NAS/BTC", "type": None, "takerOrMaker": "taker", "side": "buy",
     "price": 2.972e-05, "amount": 4.0, "cost": 0.00011888},
    {"id": "1002", "order": "77", "timestamp": T0 + 250, "datetime": "2020-01-30T16:00:00.250Z",
     "symbol": "NAS/BTC", "type": "limit", "takerOrMaker": "maker", "side": "sell",
     "price": 2.973e-05, "amount": 3266.0, "cost": None},  # no cost: price * amount
    {"id": "1003", "order": None, "timestamp": None, "datetime": "2020-01-30T16:00:01.125Z",
     "symbol": "NAS/BTC", "type": None, "takerOrMaker": None, "side": "BUY",
     "price": 0.1, "amount": 0.5, "cost": 0.05},  # no timestamp: the ISO datetime
    {"id": None, "order": None, "timestamp": T0 + 2000, "datetime": None,
     "symbol": "FIO/BTC", "type": None, "takerOrMaker": None, "side": "sell",
     "price": 1e-07, "amount": 123456.789, "cost": 0.0123456789},  # no id: a digest
]


def _csv_text(value: Any) -> str:
    return "" if value is None else str(value)  # str(float) is its shortest exact repr


def write_ccxt(tmp: Path, rows: list[dict[str, Any]], name: str = "trades") -> dict[str, Path]:
    """The same trades as CSV, JSONL (ids as numbers, as some dumps write them) and Parquet."""
    paths = {k: tmp / f"{name}.{k}" for k in ("csv", "jsonl", "parquet")}
    with paths["csv"].open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows({k: _csv_text(v) for k, v in row.items()} for row in rows)
    paths["jsonl"].write_text("".join(
        json.dumps(row | {"id": None if row["id"] is None else int(row["id"])}) + "\n"
        for row in rows))
    pq.write_table(pa.Table.from_pylist(rows), paths["parquet"])
    return paths


def mapped_trades(path: Path, **kwargs: Any) -> list[Trade]:
    fmt = make_format("trades", **kwargs)
    out = []
    for row in read_rows(fmt.files(path)):
        mapped = fmt.map(row)
        assert mapped is not None and not mapped.labels
        (trade,) = mapped.records
        assert isinstance(trade, Trade)
        out.append(trade)
    return out


# -- the planner, with an outbox whose channel keeps what it is given --------------------------


class Channel:
    def __init__(self) -> None:
        self.items: list[tuple[str, Any]] = []

    def put(self, item: tuple[str, Any]) -> None:
        self.items.append(item)

    def messages(self) -> list[tuple[str, bytes | None, bytes]]:
        return [(topic, key, value) for kind, batch in self.items if kind == "batch"
                for topic, key, value, _ in batch]

    def positions(self) -> list[Position]:
        return [payload for kind, payload in self.items if kind == "checkpoint"]


def plan(path: Path, start: Position | None = None, **options: Any) -> tuple[ReplaySummary,
                                                                             Channel]:
    venue, delay = options.pop("venue", None), options.pop("label_delay_s", 3600)
    source = str(path.resolve())
    job = ReplayJob("trades", path, ReplayOptions(progress=False, **options), TOPICS,
                    start or Position(source, "trades"), venue=venue, label_delay_s=delay)
    channel = Channel()
    summary = plan_replay(job, Outbox(channel, {}, batch=7), cast(Any, threading.Event()))
    return summary, channel


def decoded(channel: Channel) -> list[Trade | Label]:
    out: list[Trade | Label] = []
    for topic, key, value in channel.messages():
        record = codec.decode(value)
        assert isinstance(record, Trade | Label)
        assert topic == (TOPICS.trades if isinstance(record, Trade) else TOPICS.labels)
        assert key == record.key.encode()
        out.append(record)
    return out


# -- ccxt rows ------------------------------------------------------------------------------------


def test_trades_is_a_registered_format() -> None:
    assert "trades" in FORMATS
    assert isinstance(make_format("trades", venue="binance"), Trades)


def test_ccxt_trades_identical_across_csv_jsonl_parquet(tmp_path: Path) -> None:
    paths = write_ccxt(tmp_path, CCXT)
    results = {k: mapped_trades(p, venue="binance") for k, p in paths.items()}
    as_dicts = {k: [(t.item_id, t.to_dict()) for t in trades] for k, trades in results.items()}
    assert as_dicts["csv"] == as_dicts["jsonl"] == as_dicts["parquet"]
    first, second, third, fourth = results["parquet"]
    assert first.to_dict() == {
        "venue": "binance", "market": "NAS/BTC", "side": "buy", "price": 2.972e-05,
        "amount": 4.0, "quote_volume": 0.00011888, "timestamp": T0, "trade_id": "1001",
        "taker": None, "stream": None, "pool_address": None, "block_number": None,
        "transaction_hash": None, "log_index": None}
    assert first.item_id == "trade_binance_NAS/BTC_1001" and first.key == "binance:NAS/BTC"
    assert second.quote_volume == 2.973e-05 * 3266.0  # cost absent: price * amount
    assert third.timestamp == T0 + 1125 and third.side == "buy"  # from `datetime`
    assert fourth.trade_id is None and fourth.item_id.startswith("trade_")
    assert len({t.item_id for t in results["csv"]}) == 4


def test_a_venue_or_exchange_column_wins_over_venue(tmp_path: Path) -> None:
    rows = [row | {"exchange": "kraken"} for row in CCXT]
    paths = write_ccxt(tmp_path, rows)
    for path in paths.values():
        assert {t.venue for t in mapped_trades(path)} == {"kraken"}  # no --venue needed
        assert {t.venue for t in mapped_trades(path, venue="binance")} == {"kraken"}


@pytest.mark.parametrize("kind", ["csv", "jsonl", "parquet"])
def test_no_venue_anywhere_is_one_error_before_any_row(tmp_path: Path, kind: str) -> None:
    path = write_ccxt(tmp_path, CCXT)[kind]
    with pytest.raises(SourceError, match=r"no venue or exchange column; pass --venue NAME"):
        make_format("trades").files(path)


def test_a_file_without_trade_columns_names_them(tmp_path: Path) -> None:
    path = tmp_path / "tx.csv"
    path.write_text("hash,side,price\n0x1,buy,1\n")
    with pytest.raises(SourceError, match=r"missing columns symbol \(or market\), amount, "
                                          r"timestamp \(or timestamp_ms, datetime\); check "
                                          r"--format"):
        make_format("trades", venue="binance").files(path)


def test_a_folder_of_ccxt_files_is_read_in_name_order(tmp_path: Path) -> None:
    write_ccxt(tmp_path, CCXT[:2], name="part_10")
    for kind in ("csv", "parquet"):
        (tmp_path / f"part_10.{kind}").unlink()
    write_ccxt(tmp_path, CCXT[2:], name="part_9")
    (tmp_path / "part_9.csv").unlink()
    (tmp_path / "part_9.parquet").unlink()
    trades = mapped_trades(tmp_path, venue="binance")
    assert [t.trade_id for t in trades] == ["1003", None, "1001", "1002"]


# -- the pump-telegram-binance layout -------------------------------------------------------------


def test_shared_layout_keys_trades_by_pump_and_reads_one_label_per_pump() -> None:
    fmt = make_format("trades")
    files = fmt.files(PUMPS)
    assert files == [PUMPS / "trades.parquet"]  # pumps.csv is the labels, not trades
    for row in read_rows(files):
        if row.number > 2000:
            break
        mapped = fmt.map(row)
        (trade,) = mapped.records
        assert isinstance(trade, Trade)
        assert trade.stream == trade.key == row.values["pump_id"]
        assert trade.venue == row.values["venue"] and trade.market == row.values["market"]
        assert trade.timestamp == row.values["timestamp_ms"]
        assert (trade.price, trade.amount, trade.quote_volume) == (
            row.values["price"], row.values["amount"], row.values["quote_volume"])
    with (PUMPS / "pumps.csv").open(newline="") as fh:
        pumps = list(csv.DictReader(fh))
    labels = fmt.source_labels()
    assert len(labels) == len(pumps) == 30
    for label, pump in zip(labels, pumps, strict=True):
        assert (label.subject, label.partition_key, label.label, label.source) == (
            pump["pump_id"], pump["pump_id"], 1, "pumps")
        announced = int(pump_time(pump["announced_at"]))
        assert (label.block_number, label.released_block) == (announced, announced + 3600)


def pump_time(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso).timestamp()


def write_pump_folder(tmp: Path) -> Path:
    """A small folder in the shared layout: two pumps, trades every 10 minutes for 3 h."""
    folder = tmp / "pumps"
    folder.mkdir()
    rows = []
    for i in range(19):
        for pump in ("AAA_1", "BBB_1"):
            rows.append({"pump_id": pump, "venue": "binance", "market": pump[:3] + "/BTC",
                         "timestamp_ms": T0 + i * 600_000 + 123, "side": "buy",
                         "price": 1e-05 * (1 + i), "amount": 10.0 + i,
                         "quote_volume": 1e-05 * (1 + i) * (10.0 + i)})
    pq.write_table(pa.Table.from_pylist(rows), folder / "trades.parquet")
    (folder / "pumps.csv").write_text(
        "pump_id,venue,market,announced_at,trades,first_trade_at,last_trade_at\n"
        "AAA_1,binance,AAA/BTC,2020-01-30T16:30:00+00:00,19,,\n"  # released 17:30, in the data
        "BBB_1,binance,BBB/BTC,2020-01-30T18:45:00+00:00,19,,\n")  # released 19:45: after it
    return folder


def check_release_in_stream_time(records: list[Trade | Label]) -> dict[str, int]:
    """Every label comes after its release time has been reached in trade time, and before
    any trade past it; returns label subject -> its place in the stream."""
    places: dict[str, int] = {}
    clock = 0
    for place, record in enumerate(records):
        if isinstance(record, Trade):
            clock = max(clock, record.time_s)
            continue
        assert record.block_number <= record.released_block
        assert record.subject not in places, f"{record.subject} released twice"
        places[record.subject] = place
        later = [r.time_s for r in records[place + 1:] if isinstance(r, Trade)]
        if later:  # released by the first trade at or past it, never before
            assert clock < record.released_block <= later[0]
    return places


def test_each_pump_label_is_released_once_after_its_time_in_trade_time(tmp_path: Path) -> None:
    folder = write_pump_folder(tmp_path)
    summary, channel = plan(folder)
    assert summary.finished and summary.read == summary.produced == 38
    assert summary.labels == 2 and summary.out_of_order == 0
    records = decoded(channel)
    places = check_release_in_stream_time(records)
    assert set(places) == {"AAA_1", "BBB_1"}
    first_after = next(i for i, r in enumerate(records)
                       if isinstance(r, Trade) and r.time_s >= T0 // 1000 + 5400)
    assert places["AAA_1"] == first_after - 1  # announced 16:30 + 1 h: just before 17:30
    assert places["BBB_1"] == len(records) - 1  # past the data: at its end
    aaa = next(r for r in records if isinstance(r, Label) and r.subject == "AAA_1")
    assert aaa.key == "AAA_1" == next(r.key for r in records if isinstance(r, Trade)
                                      and r.stream == "AAA_1")  # the trades' partition


def test_labels_ahead_sends_every_source_label_first_with_its_release(tmp_path: Path) -> None:
    """What ``evaluate pumps`` replays with: the same labels, all before the first trade, so a
    scorer holding them until its trades reach ``released_block`` never reads one late."""
    folder = write_pump_folder(tmp_path)
    _, channel = plan(folder, labels_ahead=True)
    records = decoded(channel)
    assert [type(r) for r in records[:2]] == [Label, Label]
    assert not any(isinstance(r, Label) for r in records[2:])
    _, timed = plan(folder)
    assert sorted(r.to_dict()["subject"] for r in records[:2]) == ["AAA_1", "BBB_1"]
    assert {r.item_id: r for r in records[:2]} == {
        r.item_id: r for r in decoded(timed) if isinstance(r, Label)}  # the same labels


def test_label_delay_s_moves_the_release(tmp_path: Path) -> None:
    folder = write_pump_folder(tmp_path)
    _, channel = plan(folder, label_delay_s=0)
    records = decoded(channel)
    places = check_release_in_stream_time(records)
    assert records[places["BBB_1"] + 1:]  # 18:45 is inside the data: no longer at the end
    label = records[places["AAA_1"]]
    assert isinstance(label, Label) and label.released_block == label.block_number


def test_a_resumed_replay_releases_the_rest_and_resends_none_released(tmp_path: Path) -> None:
    folder = write_pump_folder(tmp_path)
    first, channel = plan(folder, limit=20, cursor_every=4)  # stops at 17:30 + a bit
    assert not first.finished and first.labels == 1
    sent = {r.subject for r in decoded(channel) if isinstance(r, Label)}
    assert sent == {"AAA_1"}
    position = channel.positions()[-1]
    assert position.pending_from == 1 and position.next_row == 21  # BBB_1 still waits
    second, resumed = plan(folder, start=position)
    assert second.finished and second.read == 18
    again = decoded(resumed)
    assert [r.subject for r in again if isinstance(r, Label)] == ["BBB_1"]
    check_release_in_stream_time(again)


def test_a_resume_from_an_earlier_cursor_sends_every_label_at_least_once(
        tmp_path: Path) -> None:
    folder = write_pump_folder(tmp_path)
    _, channel = plan(folder, limit=30, cursor_every=4)
    early = next(p for p in channel.positions() if p.next_row == 13)  # before 17:30
    _, resumed = plan(folder, start=early)  # a crash after that save: AAA_1 sent again
    assert [r.subject for r in decoded(resumed) if isinstance(r, Label)] == ["AAA_1", "BBB_1"]
    done = [p for p in resumed.positions() if p.done]
    assert done and done[-1].pending_from == done[-1].next_row  # nothing waits


def test_a_cursor_past_every_release_sends_no_label(tmp_path: Path) -> None:
    folder = write_pump_folder(tmp_path)
    _, channel = plan(folder, label_delay_s=0, limit=36, cursor_every=4)
    position = channel.positions()[-1]
    assert position.pending_from == position.next_row == 37  # both released
    summary, resumed = plan(folder, start=position)
    assert summary.read == 2 and summary.labels == 0
    assert not [r for r in decoded(resumed) if isinstance(r, Label)]


def test_start_and_end_block_are_unix_seconds_for_trades(tmp_path: Path) -> None:
    folder = write_pump_folder(tmp_path)
    start_s = (T0 + 600_000) // 1000  # 16:10
    end_s = (T0 + 3 * 600_000) // 1000 + 1  # 16:30
    summary, channel = plan(folder, start_block=start_s, end_block=end_s)
    trades = [r for r in decoded(channel) if isinstance(r, Trade)]
    assert {t.timestamp for t in trades} == {T0 + 600_000 + 123, T0 + 1_200_000 + 123,
                                             T0 + 1_800_000 + 123}
    assert summary.produced == 6 and not summary.finished  # stopped at the end time


def test_a_pumps_csv_with_a_bad_time_is_one_error(tmp_path: Path) -> None:
    folder = write_pump_folder(tmp_path)
    (folder / "pumps.csv").write_text("pump_id,announced_at\nAAA_1,yesterday\n")
    with pytest.raises(SourceError, match=r"pumps.csv, line 2: field 'announced_at'"):
        make_format("trades").files(folder)
    (folder / "pumps.csv").write_text("pump,when\nAAA_1,2020-01-30T16:30:00+00:00\n")
    with pytest.raises(SourceError, match="missing columns pump_id, announced_at"):
        make_format("trades").files(folder)


# -- bad rows -------------------------------------------------------------------------------------


def bad_rows() -> list[tuple[bytes, str]]:
    """(JSONL line, the reason it is dead-lettered with)."""
    good = CCXT[0]
    return [
        (json.dumps(good | {"id": "b1", "amount": -4.0}).encode(), "negative_amount"),
        (json.dumps(good | {"id": "b2", "side": "hold"}).encode(), "bad_value"),
        (json.dumps(good | {"id": "b3", "price": 0}).encode(), "bad_value"),
        (json.dumps(good | {"id": "b4", "price": math.nan}).encode(), "bad_value"),
        (json.dumps(good | {"id": "b5", "timestamp": None, "datetime": None}).encode(),
         "missing_field"),
        (b'{"id": "b6", "symbol": "NAS/BTC", "side": ', "bad_row"),  # not JSON
        (json.dumps(good | {"id": "b7", "info": {"raw": "x" * 2_000_000}}).encode(),
         "oversized"),  # a 2 MB line
        (b"x" * 2_000_000, "bad_row"),  # a 2 MB line that is not JSON
    ]


def test_bad_trade_rows_are_dead_lettered_and_the_rest_produced(tmp_path: Path) -> None:
    good = [row | {"id": f"g{i}"} for i, row in enumerate(CCXT * 2)]
    bad = bad_rows()
    lines = [json.dumps(row).encode() for row in good[:4]] + [line for line, _ in bad] + [
        json.dumps(row).encode() for row in good[4:]]
    path = tmp_path / "trades.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    summary, channel = plan(path, venue="binance")
    assert summary.read == len(lines) == summary.produced + summary.dead_lettered
    assert (summary.produced, summary.dead_lettered, summary.skipped) == (len(good), len(bad), 0)
    trades = [codec.decode(v) for t, _, v in channel.messages() if t == TOPICS.trades]
    assert [t.item_id for t in trades] == [f"trade_binance_{row['symbol']}_{row['id']}"
                                           for row in good]
    letters = [decode_letter(v) for t, _, v in channel.messages() if t == TOPICS.dlq]
    assert [letter["reason"] for letter in letters] == [reason for _, reason in bad]
    assert [letter["source"]["line"] for letter in letters] == list(range(5, 5 + len(bad)))
    assert all(letter["source"]["file"] == str(path) for letter in letters)
    for letter, (line, _) in zip(letters, bad, strict=True):
        assert letter["original_size"] == len(line)
        if not letter["original_truncated"]:
            assert letter["original"] == line
    assert "expected buy or sell" in letters[1]["detail"]
    assert "timestamp" in letters[4]["detail"]


def test_bad_values_in_parquet_and_csv_are_dead_lettered_too(tmp_path: Path) -> None:
    rows = [CCXT[0], CCXT[1] | {"price": math.nan}, CCXT[2] | {"amount": -1.0},
            CCXT[3] | {"side": "hold"}]
    paths = write_ccxt(tmp_path, rows)
    for kind in ("csv", "parquet"):
        summary, channel = plan(paths[kind], venue="binance")
        assert (summary.read, summary.produced, summary.dead_lettered) == (4, 1, 3), kind
        assert summary.dead_letter_reasons == {"bad_value": 2, "negative_amount": 1}, kind
        letters = [decode_letter(v) for t, _, v in channel.messages() if t == TOPICS.dlq]
        assert json.loads(letters[0]["original"])["id"] == "1002"  # the row's values


# -- the CLI, as a user types it ------------------------------------------------------------------


def chainwatch(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CHAINWATCH, *args, "--bootstrap", f"127.0.0.1:{free_port()}"],
                          capture_output=True, text=True, cwd=cwd, timeout=60, check=False)


def one_line(result: subprocess.CompletedProcess[str], *expected: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    for text in expected:
        assert text in lines[0], lines[0]
    assert result.stdout == ""


@pytest.mark.e2e
def test_cli_without_a_venue_is_one_line_before_producing(tmp_path: Path) -> None:
    write_ccxt(tmp_path, CCXT)
    # nothing listens on that port: reaching for the broker would be another error
    one_line(chainwatch("produce", "replay", "trades.csv", "--format", "trades", cwd=tmp_path),
             "chainwatch produce: error: trades.csv has no venue or exchange column; pass "
             "--venue NAME")


@pytest.mark.e2e
@pytest.mark.parametrize(("args", "expected"), [
    (["--venue", ""], "argument --venue: '' is not a venue name"),
    (["--venue", "bin ance"], "argument --venue: 'bin ance' is not a venue name"),
    (["--label-delay-s", "-5"], "argument --label-delay-s: -5 must be at least 0"),
    (["--label-delay-s", "1h"], "argument --label-delay-s: '1h' is not a whole number"),
    (["--label-delay-s", "999999999999"], "over ten years"),
])
def test_cli_bad_trade_options_are_one_line(tmp_path: Path, args: list[str],
                                            expected: str) -> None:
    write_ccxt(tmp_path, CCXT)
    one_line(chainwatch("produce", "replay", "trades.csv", "--format", "trades", *args,
                        cwd=tmp_path), "chainwatch produce replay: error: ", expected, "--help")


@pytest.mark.e2e
def test_cli_venue_with_another_format_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "tx.csv").write_text("hash\n")
    one_line(chainwatch("produce", "replay", "tx.csv", "--format", "transactions", "--venue",
                        "binance", cwd=tmp_path),
             "--venue is for --format trades, not transactions; drop it")


@pytest.mark.e2e
def test_cli_help_lists_the_trades_format() -> None:
    result = subprocess.run([CHAINWATCH, "produce", "replay", "--help"], capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    for text in ("trades", "--venue NAME", "--label-delay-s S", "unix second"):
        assert text in result.stdout
    assert sys.executable  # the console script sits beside this interpreter
