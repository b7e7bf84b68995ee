"""Stream rows out of CSV, JSONL and Parquet files in constant memory.

A source path is a file or a directory of files (ethereum-etl writes one file per block
range; they are read in natural name order). Every row comes out as a :class:`Row` carrying
its 1-based number across the whole source, its file and line, its values, and its original
bytes for the dead-letter queue. Values are strings or exact ints — never floats — so uint256
amounts survive: CSV columns are read as text, JSON with the standard library.

A row the file format itself cannot parse comes out as a Row with ``error`` set and a
``reason`` code; the caller dead-letters it with its original bytes and goes on:

- ``not_utf8``: a CSV or JSONL line that is not UTF-8 text (a CSV line is found before pyarrow
  sees it and swapped for a marker line, see :class:`_Utf8Lines`: pyarrow would abort the whole
  read on it);
- ``bad_row``: a CSV line with the wrong number of fields, a JSONL line that is not JSON or
  not an object.

A CSV row's ``line`` is its record number, header counted: its line in a file with one
record per line and no blank lines, as ethereum-etl and BigQuery write them.
"""

from __future__ import annotations

import csv
import io
import json
import re
import secrets
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from pipeline.errors import SourceError

BATCH_ROWS = 8192
JSONL_SAMPLE_LINES = 100  # lines whose keys are a JSONL file's columns
SUFFIXES = {".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl",
            ".parquet": "parquet", ".pq": "parquet"}


@dataclass(frozen=True, slots=True)
class Row:
    number: int  # 1-based, across every file of the source
    file: str
    line: int  # 1-based line (CSV/JSONL, header counted) or row within the file (Parquet)
    values: dict[str, Any]
    text: bytes | None = None  # the original line, where the format has one
    error: str | None = None  # why the file format itself cannot parse this row
    reason: str | None = None  # with ``error``: its dead-letter reason code

    @property
    def location(self) -> dict[str, Any]:
        return {"file": self.file, "line": self.line, "row": self.number}

    @property
    def raw(self) -> bytes:
        """The original bytes: the line itself, or the row's values as JSON (Parquet, CSV)."""
        if self.text is not None:
            return self.text
        return json.dumps(self.values, default=str).encode()


def source_files(path: Path) -> list[Path]:
    """The files of a source, in order; raises SourceError with what to do."""
    if not path.exists():
        raise SourceError(f"{path} does not exist; check the path")
    if path.is_file():
        if path.suffix.lower() not in SUFFIXES:
            raise SourceError(f"{path} is not a .csv, .jsonl or .parquet file")
        return [path]
    files = sorted((p for p in path.iterdir() if p.suffix.lower() in SUFFIXES and p.is_file()),
                   key=_natural_key)
    if not files:
        raise SourceError(f"{path} holds no .csv, .jsonl or .parquet files")
    return files


def columns(path: Path) -> frozenset[str] | None:
    """The columns of one file: the CSV header, the Parquet schema, the keys of the first
    JSON lines; ``None`` for an empty file. A file that is not of its suffix's kind at all
    raises SourceError, before any row is read."""
    kind = SUFFIXES[path.suffix.lower()]
    try:
        if kind == "parquet":
            try:
                return frozenset(pq.ParquetFile(path).schema_arrow.names)
            except pa.ArrowException as exc:
                raise SourceError(f"cannot read {path}: not a Parquet file ({exc}); check the "
                                  "path") from None
        with path.open("rb") as fh:
            head = fh.readline(1 << 20) if kind == "csv" else b""
            sample = [] if kind == "csv" else [
                line for line in (fh.readline(1 << 20) for _ in range(JSONL_SAMPLE_LINES))
                if line.strip()]
    except OSError as exc:
        raise SourceError(f"cannot read {path}: {exc}") from None
    if kind == "csv":
        return _csv_header(path, head)
    return _jsonl_keys(path, sample)


def _csv_header(path: Path, head: bytes) -> frozenset[str] | None:
    if not head.strip():
        return None
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        raise SourceError(f"{path}: not a CSV file (its first line is not UTF-8 text); check "
                          "the path") from None
    if "\0" in text:
        raise SourceError(f"{path}: not a CSV file (its first line holds NUL bytes); check "
                          "the path")
    return frozenset(next(csv.reader([text.rstrip("\r\n")]), []))


def _jsonl_keys(path: Path, sample: list[bytes]) -> frozenset[str] | None:
    if not sample:
        return None
    keys: set[str] = set()
    parsed = 0
    for line in sample:
        try:
            values = json.loads(line)
        except (ValueError, UnicodeDecodeError):
            continue
        if isinstance(values, dict):
            parsed += 1
            keys.update(values)
    if not parsed:
        raise SourceError(f"{path}: not a JSON lines file (none of its first {len(sample)} "
                          "lines is a JSON object); check the path")
    return frozenset(keys)


def count_rows(files: list[Path]) -> int:
    """Rows in all files: Parquet from its footer, text files by counting lines."""
    total = 0
    for path in files:
        kind = SUFFIXES[path.suffix.lower()]
        try:
            if kind == "parquet":
                total += pq.ParquetFile(path).metadata.num_rows
                continue
            with path.open("rb") as fh:
                lines = sum(chunk.count(b"\n") for chunk in iter(lambda: fh.read(1 << 20), b""))
                fh.seek(max(fh.tell() - 1, 0))
                if fh.tell() and fh.read(1) != b"\n":
                    lines += 1  # last line without a newline
        except (OSError, pa.ArrowException) as exc:
            raise SourceError(f"cannot read {path}: {exc}") from None
        total += lines - (1 if kind == "csv" and lines else 0)
    return total


def read_rows(files: list[Path], start: int = 1) -> Iterator[Row]:
    """Rows numbered from 1 across ``files``; those before ``start`` are read and dropped."""
    number = 0
    for path in files:
        kind = SUFFIXES[path.suffix.lower()]
        reader = {"csv": _csv_rows, "jsonl": _jsonl_rows, "parquet": _parquet_rows}[kind]
        file = str(path)
        try:
            for line, values, text, error in reader(path):
                number += 1
                if number < start:
                    continue
                if error is None:
                    yield Row(number, file, line, values, text)
                else:
                    yield Row(number, file, line, values, text, error[1], error[0])
        except (OSError, pa.ArrowException) as exc:
            raise SourceError(f"cannot read {path}: {exc}") from None


# (line, values, original line, error: (reason, detail) or None)
_Parsed = tuple[int, dict[str, Any], bytes | None, tuple[str, str] | None]
_NOT_UTF8_HINT = "re-export the file as UTF-8"


def _not_utf8(line: bytes, exc: UnicodeDecodeError) -> str:
    return (f"not UTF-8 text: byte 0x{line[exc.start]:02x} at column {exc.start + 1}; "
            f"{_NOT_UTF8_HINT}")


def _jsonl_rows(path: Path) -> Iterator[_Parsed]:
    with path.open("rb") as fh:
        for line, raw_line in enumerate(fh, start=1):
            text = raw_line.rstrip(b"\r\n")
            if not text.strip():
                continue  # blank lines are not rows
            try:
                values = json.loads(text)  # the standard library keeps big integers exact
            except UnicodeDecodeError as exc:
                yield line, {}, text, ("not_utf8", _not_utf8(text, exc))
                continue
            except ValueError as exc:
                yield line, {}, text, ("bad_row", f"not valid JSON: {exc}")
                continue
            if not isinstance(values, dict):
                yield line, {}, text, ("bad_row", "expected a JSON object, got "
                                       f"{type(values).__name__}")
                continue
            yield line, values, text, None


class _Utf8Lines(io.RawIOBase):
    """A CSV file's bytes as pyarrow is given them: every line that is not UTF-8 text is
    swapped for a marker line with one field too many, which pyarrow passes to the
    invalid-row handler. (Given the line itself, pyarrow fails to decode it for the handler,
    or to convert a field to text, and aborts the whole read.) The original line waits for
    the handler to :meth:`claim` it.

    Each read ends after its last newline, a byte that never occurs inside a UTF-8 sequence;
    the line it cut waits for the next read. A read of plain ASCII, the usual case, costs an
    ``isascii`` scan and goes to pyarrow without a copy. Held lines are claimed as pyarrow
    parses their block, so only a few blocks' worth ever wait.
    """

    def __init__(self, raw: BinaryIO, fields: int) -> None:
        super().__init__()
        self._raw = raw
        self._marker = f"chainwatch-not-utf8-{secrets.token_hex(8)}-"  # no real row has it
        self._extra = b"," * fields  # the marker line has fields + 1 fields
        self._tail = b""  # read, but its line not yet ended
        self._out: deque[bytes | memoryview] = deque()  # checked, for pyarrow
        self._eof = False
        self._held: dict[int, tuple[bytes, str]] = {}
        self._seq = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes | memoryview:
        """Up to ``size`` checked bytes (fewer at a line cut); empty at the end."""
        if size is None or size < 0:
            return self.readall()
        if size == 0:
            return b""
        while not self._out and not self._eof:
            self._fill(size)
        if not self._out:
            return b""
        piece = self._out[0]
        if len(piece) <= size:
            return self._out.popleft()
        self._out[0] = piece[size:]
        return piece[:size]

    def claim(self, text: str) -> tuple[bytes, str] | None:
        """(original line, detail) of a marker line pyarrow reports; None for a real row."""
        if not text.startswith(self._marker):
            return None
        seq = int(text[len(self._marker):].partition(",")[0])
        for swallowed in [s for s in self._held if s < seq]:  # inside a quoted value
            del self._held[swallowed]
        return self._held.pop(seq, None)

    def _fill(self, size: int) -> None:
        data = self._raw.read(size)
        if not data:
            self._eof = True
            if self._tail:
                self._out.append(self._checked(self._tail))
            self._tail = b""
            return
        cut = data.rfind(b"\n") + 1
        if not cut:  # a line longer than a read
            self._tail += data
            return
        if data.isascii() and self._tail.isascii():
            first = 0
            if self._tail:  # the cut line, now ended
                first = data.find(b"\n") + 1
                self._out.append(self._tail + data[:first])
            if first < cut:
                self._out.append(memoryview(data)[first:cut])
        else:
            self._out.append(self._checked(self._tail + data[:cut]))
        self._tail = data[cut:]

    def _checked(self, block: bytes) -> bytes:
        try:
            block.decode("utf-8")
            return block
        except UnicodeDecodeError:
            pass
        lines = block.split(b"\n")
        for i, line in enumerate(lines):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as exc:
                original = line.removesuffix(b"\r")
                self._seq += 1
                self._held[self._seq] = (original, _not_utf8(original, exc))
                lines[i] = (f"{self._marker}{self._seq}".encode() + self._extra
                            + line[len(original):])
        return b"\n".join(lines)


def _csv_rows(path: Path) -> Iterator[_Parsed]:
    with path.open("rb") as fh:
        head = fh.readline()
    try:
        columns = next(csv.reader([head.decode("utf-8")]), [])
    except UnicodeDecodeError:
        raise SourceError(f"{path}: its header line is not UTF-8 text; "
                          f"{_NOT_UTF8_HINT}") from None
    if not columns:
        return
    block = 1 << 22
    bad: list[_Parsed] = []  # filled by pyarrow while it parses a block

    with path.open("rb") as raw:
        stream = _Utf8Lines(raw, len(columns))

        def on_invalid(row: Any) -> str:
            held = stream.claim(row.text)
            if held is not None:
                bad.append((row.number, {}, held[0], ("not_utf8", held[1])))
            else:
                bad.append((row.number, {}, row.text.encode(), (
                    "bad_row", f"CSV row with the wrong number of fields: "
                    f"{row.actual_columns}, the header has {row.expected_columns}")))
            return "skip"

        reader = pacsv.open_csv(
            stream,
            read_options=pacsv.ReadOptions(block_size=block, use_threads=False),
            parse_options=pacsv.ParseOptions(invalid_row_handler=on_invalid),
            convert_options=pacsv.ConvertOptions(
                column_types=dict.fromkeys(columns, pa.string()), strings_can_be_null=False),
        )
        bad_lines: set[int] = set()
        line = 1  # the header
        for batch in reader:
            for parsed in bad:
                bad_lines.add(parsed[0])
                yield parsed
            bad.clear()
            for values in batch.to_pylist():
                line += 1
                while line in bad_lines:
                    line += 1
                yield line, {k: (None if v == "" else v) for k, v in values.items()}, None, None
        yield from bad


def _parquet_rows(path: Path) -> Iterator[_Parsed]:
    line = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=BATCH_ROWS):
        for values in batch.to_pylist():
            line += 1
            yield line, values, None, None


def _natural_key(path: Path) -> list[Any]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]
