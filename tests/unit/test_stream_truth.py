"""write_truth writes into an existing directory only; it never creates one."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.errors import ChainwatchError, ConfigError
from producers.stream import write_truth

TRUTH = [{"type": "wash_trading", "start": 1}]


def test_truth_in_a_missing_directory_is_a_config_error_and_creates_nothing(
        tmp_path: Path) -> None:
    path = tmp_path / "missing" / "deeper" / "truth.jsonl"
    with pytest.raises(ConfigError, match=r"directory .*missing.deeper does not exist; "
                                          r"create it first") as caught:
        write_truth(path, TRUTH)
    assert isinstance(caught.value, ChainwatchError)
    assert not (tmp_path / "missing").exists()


def test_truth_under_a_file_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "plain").write_text("x")
    with pytest.raises(ConfigError, match="is not a directory"):
        write_truth(tmp_path / "plain" / "truth.jsonl", TRUTH)


def test_truth_in_an_existing_directory_is_written(tmp_path: Path) -> None:
    path = tmp_path / "truth.jsonl"
    write_truth(path, TRUTH)
    assert path.read_text() == '{"start":1,"type":"wash_trading"}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["truth.jsonl"]  # no temp file left
