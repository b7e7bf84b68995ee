"""The public Python API as the README uses it: a JSONL file of records read with pandas,
scored through ``pipeline.records_from_frame`` and ``pipeline.score``."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import pipeline
from pipeline import codec
from producers.synth import SynthConfig, SyntheticChain

README = Path(__file__).resolve().parents[2] / "README.md"


def test_a_jsonl_file_read_with_pandas_scores_like_the_records_themselves(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    chain = SyntheticChain(SynthConfig(seed=5, blocks=300))
    records = [r for block in chain.blocks() for r in (*block.transactions, *block.dex_events)]
    (tmp_path / "records.jsonl").write_bytes(b"\n".join(codec.encode(r) for r in records))
    snippet = re.search(r"```python\n(import json\nimport pandas as pd\nimport pipeline\n.*?)```",
                        README.read_text(), re.S)
    assert snippet is not None, "README's Python API example is missing"
    namespace: dict[str, Any] = {}
    monkeypatch.chdir(tmp_path)
    exec(snippet.group(1), namespace)  # the README's own code, run as written
    direct = pipeline.score(records)
    assert direct and [a.to_json() for a in namespace["alerts"]] == [a.to_json() for a in direct]
    assert set(pipeline.__all__) >= {"Scorer", "Detector", "RuleSet", "RuleSpec", "Settings",
                                     "Transaction", "DexEvent", "Label", "records_from_frame"}
    assert all(hasattr(pipeline, name) for name in pipeline.__all__)
    frame = pd.DataFrame([json.loads(codec.encode(r)) for r in records[:3]])
    assert list(pipeline.records_from_frame(frame)) == records[:3]
