"""Stream rows out of CSV, JSONL and Parquet files in constant memory.

A source path is a file or a directory of files (ethereum-etl writes one file per block
range; they are read in natural name order). Every row comes out as a :class:`Row` carrying
its 1-based number across the whole source, its file and line, its values, and its original
bytes for the dead-letter queue. Values are strings or exact ints — never floats — so uint256
amounts survive: CSV columns are read as text, JSON with the standard library.

A row the file format itself cannot parse (a CSV line with the wrong number of fields, a
JSONL line that is not an object) comes out as a Row with ``error`` set; the caller
dead-letters it and goes on.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
    error: str | None = None

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
        try:
            for line, values, text, error in reader(path):
                number += 1
                if number >= start:
                    yield Row(number, str(path), line, values, text, error)
        except (OSError, pa.ArrowException) as exc:
            raise SourceError(f"cannot read {path}: {exc}") from None


_Parsed = tuple[int, dict[str, Any], bytes | None, str | None]


def _jsonl_rows(path: Path) -> Iterator[_Parsed]:
    with path.open("rb") as fh:
        for line, raw_line in enumerate(fh, start=1):
            text = raw_line.rstrip(b"\r\n")
            if not text.strip():
                continue  # blank lines are not rows
            try:
                values = json.loads(text)  # the standard library keeps big integers exact
            except (ValueError, UnicodeDecodeError) as exc:
                yield line, {}, text, f"not valid JSON: {exc}"
                continue
            if not isinstance(values, dict):
                yield line, {}, text, f"expected a JSON object, got {type(values).__name__}"
                continue
            yield line, values, text, None


def _csv_rows(path: Path) -> Iterator[_Parsed]:
    with path.open(encoding="utf-8", errors="replace", newline="") as fh:
        columns = next(csv.reader(fh), [])
    if not columns:
        return
    bad: list[tuple[int, str]] = []  # filled by pyarrow while it parses a block

    def on_invalid(row: Any) -> str:
        bad.append((row.number, row.text))
        return "skip"

    reader = pacsv.open_csv(
        path,
        read_options=pacsv.ReadOptions(block_size=1 << 22, use_threads=False),
        parse_options=pacsv.ParseOptions(invalid_row_handler=on_invalid),
        convert_options=pacsv.ConvertOptions(
            column_types=dict.fromkeys(columns, pa.string()), strings_can_be_null=False),
    )
    bad_lines: set[int] = set()
    line = 1  # the header
    for batch in reader:
        for number, text in bad:
            bad_lines.add(number)
            yield number, {}, text.encode(), "CSV row with the wrong number of fields"
        bad.clear()
        for values in batch.to_pylist():
            line += 1
            while line in bad_lines:
                line += 1
            yield line, {k: (None if v == "" else v) for k, v in values.items()}, None, None
    for number, text in bad:
        yield number, {}, text.encode(), "CSV row with the wrong number of fields"


def _parquet_rows(path: Path) -> Iterator[_Parsed]:
    line = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=BATCH_ROWS):
        for values in batch.to_pylist():
            line += 1
            yield line, values, None, None


def _natural_key(path: Path) -> list[Any]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]
