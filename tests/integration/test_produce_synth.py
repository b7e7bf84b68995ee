"""``chainwatch produce synth`` as a user types it: same seed, same bytes and item ids."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from kafka import KafkaConsumer

from pipeline.settings import Settings
from producers.campaigns import CAMPAIGN_TYPES
from producers.synth import SynthConfig, SyntheticChain
from tests.conftest import CHAINWATCH, cli_env, consume_all, unique

pytestmark = pytest.mark.integration


def _synth(settings: Settings, seed: int, truth: Path) -> dict[str, object]:
    result = subprocess.run(
        [CHAINWATCH, "produce", "synth", "--blocks", "150", "--seed", str(seed), "--truth",
         str(truth), "--json"], capture_output=True, text=True, env=cli_env(settings),
        timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    summary: dict[str, object] = json.loads(result.stdout)
    return summary


def _item_ids(settings: Settings, consumer_factory: Callable[..., KafkaConsumer],
              expected: int) -> list[str]:
    consumer = consumer_factory(settings.topics.transactions, settings.topics.dex)
    return sorted(orjson.loads(m.value)["item_id"] for m in consume_all(consumer, expected))


def test_same_seed_same_truth_bytes_and_item_ids(
        settings: Settings, tmp_path: Path,
        consumer_factory: Callable[..., KafkaConsumer]) -> None:
    other = settings.replace(**{f"topics__{role}": unique(f"t2-{role}")
                                for role in settings.topics.all()})
    first = _synth(settings, 5, tmp_path / "a.jsonl")
    second = _synth(other, 5, tmp_path / "b.jsonl")
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()
    produced = first["produced"]
    assert isinstance(produced, int) and produced == second["produced"] > 1000

    ids = _item_ids(settings, consumer_factory, produced)
    assert ids == _item_ids(other, consumer_factory, produced)
    chain = SyntheticChain(SynthConfig(seed=5, blocks=150,
                                       campaigns=dict.fromkeys(CAMPAIGN_TYPES, 4.0)))
    assert ids == sorted(r.item_id for b in chain.blocks()
                         for r in [*b.transactions, *b.dex_events])
    truth = [json.loads(line) for line in (tmp_path / "a.jsonl").read_text().splitlines()]
    assert {c["type"] for c in truth} == set(CAMPAIGN_TYPES)

    third = tmp_path / "c.jsonl"
    _synth(settings.replace(**{f"topics__{role}": unique(f"t3-{role}")
                               for role in settings.topics.all()}), 6, third)
    assert third.read_bytes() != (tmp_path / "a.jsonl").read_bytes()
