"""Bytes that are not UTF-8, and rows of the wrong width, become dead-letter rows; they never
stop a read, and every other row still comes out with its right line."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.errors import SourceError
from producers.files import _Utf8Lines, count_rows, read_rows
from producers.formats import make_format
from tests.unit.test_formats import LOGS, POOL, TOKEN0, TOKEN1, TRANSACTIONS

BAD = b"\xff\xfe"

TOKEN_TRANSFERS = [
    {"token_address": "0x" + "aa" * 20, "from_address": "0x" + f"{i:040x}",
     "to_address": "0x" + "bb" * 20, "value": str(10**20 + i),
     "transaction_hash": "0x" + f"{i:064x}", "log_index": str(i), "block_number": str(100 + i)}
    for i in range(4)
]
BLTE = [
    {"block_number": str(100 + i), "block_timestamp": str(1_600_000_000 + 12 * i),
     "value": "1.8e+18", "gas": "21000", "gas_price": str(30 * 10**9), "class": str(i % 2)}
    for i in range(4)
]
CSV_FORMATS = {"transactions": TRANSACTIONS, "token-transfers": TOKEN_TRANSFERS, "logs": LOGS,
               "blte": BLTE}


def _csv_lines(rows: list[dict[str, str]]) -> list[bytes]:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return [line.encode() for line in out.getvalue().splitlines()]


def _spoil(line: bytes) -> bytes:
    """The line with bytes that are not UTF-8 inside its second field."""
    first, rest = line.split(b",", 1)
    return first + b"," + BAD + rest


@pytest.mark.parametrize("name", sorted(CSV_FORMATS))
def test_csv_row_that_is_not_utf8_is_a_dead_letter_row_and_the_rest_map(
        name: str, tmp_path: Path) -> None:
    pools = tmp_path / "pools.csv"
    pools.write_text(f"pool_address,token0,token1\n{POOL},{TOKEN0},{TOKEN1}\n")
    lines = _csv_lines(CSV_FORMATS[name])
    bad_line = _spoil(lines[2])  # the second data row, line 3
    path = tmp_path / f"{name}.csv"
    path.write_bytes(b"\n".join([*lines[:2], bad_line, *lines[3:]]) + b"\n")
    fmt = make_format(name, pools=pools)

    rows = list(read_rows(fmt.files(path)))

    assert len(rows) == count_rows([path]) == len(lines) - 1
    [bad] = [r for r in rows if r.error is not None]
    assert (bad.line, bad.reason, bad.raw) == (3, "not_utf8", bad_line)
    assert bad.error is not None and "0xff" in bad.error and "UTF-8" in bad.error
    good = [r for r in rows if r.error is None]
    assert sorted(r.line for r in good) == [2, *range(4, len(lines) + 1)]
    for row in good:
        fmt.map(row)  # every other row is still a valid record (raises if not)


def test_wrong_width_rows_with_and_without_bad_bytes_keep_their_lines(
        tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "tx.csv"
    path.write_bytes(b"a,b\n1,2\n3,\xff\xfe,x\n4\n5,6,7\n8,9\r\n\xc3\x28,1\r\n10,\xc3\xa9\n11,"
                     + BAD)
    rows = {r.line: r for r in read_rows([path])}
    assert len(rows) == count_rows([path]) == 8
    assert {line: (r.reason, r.raw) for line, r in rows.items() if r.error} == {
        3: ("not_utf8", b"3,\xff\xfe,x"),  # pyarrow could not even hand this row over
        4: ("bad_row", b"4"),
        5: ("bad_row", b"5,6,7"),
        7: ("not_utf8", b"\xc3\x28,1"),  # without its \r\n
        9: ("not_utf8", b"11," + BAD),  # the last line, without a newline
    }
    assert "wrong number of fields: 1, the header has 2" in (rows[4].error or "")
    assert {line: r.values for line, r in rows.items() if not r.error} == {
        2: {"a": "1", "b": "2"}, 6: {"a": "8", "b": "9"}, 8: {"a": "10", "b": "é"}}
    assert "Traceback" not in capfd.readouterr().err


def test_bad_rows_past_the_first_block_keep_their_lines(tmp_path: Path) -> None:
    row = b"0x" + b"ab" * 32 + b",1,100\n"  # 71 bytes: ~60,000 rows fill the first 4 MiB block
    rows = [row] * 120_000
    for line in (2, 59_000, 60_000, 100_001):  # lines 2 and up are rows[line - 2]
        rows[line - 2] = b"0x" + BAD + b",1,100\n"
    path = tmp_path / "big.csv"
    path.write_bytes(b"hash,nonce,block\n" + b"".join(rows))
    bad, good = [], 0
    for r in read_rows([path]):
        if r.error is None:
            good += 1
        else:
            bad.append((r.line, r.reason, r.raw))
    assert good == 120_000 - 4
    assert sorted(bad) == [(line, "not_utf8", b"0x" + BAD + b",1,100")
                           for line in (2, 59_000, 60_000, 100_001)]


def test_csv_header_that_is_not_utf8_is_a_source_error(tmp_path: Path) -> None:
    path = tmp_path / "tx.csv"
    path.write_bytes(b"a," + BAD + b"\n1,2\n")
    with pytest.raises(SourceError, match="header line is not UTF-8 text; re-export"):
        list(read_rows([path]))
    with pytest.raises(SourceError, match="first line is not UTF-8 text"):
        make_format("transactions").files(path)  # replay's check, before any row is read


def test_jsonl_lines_not_utf8_or_not_json_are_dead_letter_rows(tmp_path: Path) -> None:
    path = tmp_path / "tx.jsonl"
    path.write_bytes(b'{"a": 1}\n{"a": "' + BAD + b'"}\nnot json\n[1]\n{"a": 2}\n')
    rows = list(read_rows([path]))
    assert [(r.line, r.reason, r.raw) for r in rows if r.error] == [
        (2, "not_utf8", b'{"a": "' + BAD + b'"}'), (3, "bad_row", b"not json"),
        (4, "bad_row", b"[1]")]
    assert [r.values for r in rows if not r.error] == [{"a": 1}, {"a": 2}]


_LINE = st.one_of(
    st.text(alphabet="ab,é€\r", max_size=12).map(str.encode),  # UTF-8, some of it multi-byte
    st.binary(max_size=12).filter(lambda b: b"\n" not in b),  # mostly not UTF-8
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_LINE, min_size=1, max_size=12), st.booleans(), st.integers(1, 20))
def test_utf8_lines_swaps_exactly_the_bad_lines_at_any_read_size(
        lines: list[bytes], final_newline: bool, size: int) -> None:
    data = b"\n".join(lines) + (b"\n" if final_newline else b"")
    stream = _Utf8Lines(io.BytesIO(data), fields=2)
    pieces = []
    while piece := stream.read(size):
        assert len(piece) <= size
        pieces.append(bytes(piece))
    out_lines = b"".join(pieces).split(b"\n")
    assert len(out_lines) == len(data.split(b"\n"))  # no line added, lost or split
    for original, seen in zip(data.split(b"\n"), out_lines, strict=True):
        try:
            original.decode("utf-8")
        except UnicodeDecodeError:
            held = stream.claim(seen.decode("ascii"))
            assert held is not None and held[0] == original.removesuffix(b"\r")
            assert seen.endswith(b",," + (b"\r" if original.endswith(b"\r") else b""))
        else:
            assert seen == original
            assert stream.claim(seen.decode("utf-8")) is None

