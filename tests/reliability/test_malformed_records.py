"""Malformed records of every category interleaved with a seeded synthetic stream.

Every malformed record ends in ``chainwatch.dlq`` once, with its reason and source offset;
every valid one is scored (consumed = scored + dead-lettered); and the alert ids equal those
of a run over the valid records alone. (Alert *bytes* differ: they carry source offsets.)

Most malformed records are a valid record of the stream, changed: they go right after it,
with its key, so they land on its partition among its neighbours.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from kafka import KafkaConsumer, KafkaProducer

from pipeline import codec
from pipeline.dlq import decode_letter
from pipeline.records import ChainRecord
from pipeline.settings import Settings
from pipeline.topics import ensure_topics
from producers.sink import message_for
from tests.conftest import unique
from tests.helpers import (
    AlertDiff,
    chain_records,
    drain,
    read_alerts,
    start_scorer,
    write_records,
)
from tests.reliability.conftest import Faults, Reaper
from tests.reliability.procs import finish, tracebacks

pytestmark = [pytest.mark.reliability, pytest.mark.integration]

BLOCKS = 200
CAMPAIGNS = 10.0
MAX_OVERSIZED = 3  # records over 1 MB per run, whatever --fault-records says (broker memory)
BIG_REQUESTS = {"max_request_size": 8 * 1024 * 1024}  # Tansu takes what Kafka would refuse

Maker = Callable[[random.Random, dict[str, Any]], Any]


@dataclass(frozen=True)
class Category:
    """One kind of malformed record: how to make it from a valid wire dict, and the DLQ
    reasons that name it (empty: any non-empty reason)."""

    name: str
    make: Maker  # returns the bytes to send, or a dict to encode as JSON
    reasons: frozenset[str] = frozenset()
    labels_topic: bool = False  # sent to the labels topic instead of the template's


def _retyped(rng: random.Random, wire: dict[str, Any]) -> dict[str, Any]:
    field = rng.choice(["block_number", "log_index" if "log_index" in wire else "nonce",
                        "block_timestamp"])
    return wire | {field: rng.choice([[1], {"n": 1}, True, "lots", 1.5])}


def _missing(rng: random.Random, wire: dict[str, Any]) -> dict[str, Any]:
    required = ["block_number", "block_timestamp",
                *(["pool_address", "kind", "log_index"] if "pool_address" in wire
                  else ["hash", "from_address", "value"])]
    drop = rng.choice(required)
    return {k: v for k, v in wire.items() if k != drop}


def _negative(rng: random.Random, wire: dict[str, Any]) -> dict[str, Any]:
    fields = ["amount0_in", "reserve1"] if "pool_address" in wire else ["value", "gas_price"]
    return wire | {rng.choice(fields): str(-rng.randrange(1, 10**20))}


def _renamed(wire: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """``wire`` as another record (a new item id), with ``changes``."""
    key = "transaction_hash" if "pool_address" in wire else "hash"
    renamed = f"0x{random.Random(str(wire[key])).getrandbits(256):064x}"
    return wire | {key: renamed, "item_id": None} | changes


def _label(rng: random.Random, long_field: str) -> dict[str, Any]:
    label = {"type": "label", "schema_version": 1, "subject": "0x" + "12" * 20, "label": 1,
             "source": "reliability", "block_number": 16_000_000,
             "released_block": 16_000_010, "partition_key": "0x" + "34" * 20}
    return label | {long_field: "x" * rng.choice([300, 2_000, 50_000])}


CATEGORIES = [
    Category("not_json", lambda rng, w: orjson.dumps(w)[: rng.randrange(1, 40)],
             frozenset({"not_json"})),
    Category("not_utf8", lambda rng, w: orjson.dumps(w).replace(b'"0x', b'"\xff\xfe0x', 1),
             frozenset({"not_json", "not_utf8"})),
    Category("not_an_object", lambda rng, w: rng.choice([b"[]", b"42", b'"tx"', b"null"]),
             frozenset({"bad_type"})),
    Category("wrong_type", _retyped, frozenset({"bad_type"})),
    Category("missing_field", _missing, frozenset({"missing_field"})),
    Category("negative_amount", _negative, frozenset({"negative_amount"})),
    Category("unknown_schema", lambda rng, w: w | {"schema_version": rng.choice([0, 2, 99])},
             frozenset({"unknown_schema"})),
    Category("oversized", lambda rng, w: _renamed(w, input="0x" + "ab" * 600_000),
             frozenset({"oversized"})),
    Category("implausible_block", lambda rng, w: _renamed(w, block_number=2**64 - 1),
             frozenset({"bad_value"})),
    Category("long_label_string",
             lambda rng, w: _label(rng, rng.choice(["subject", "source", "partition_key"])),
             frozenset({"too_long"}), labels_topic=True),
]
@dataclass
class Sent:
    category: Category
    value: bytes
    source: dict[str, Any]


def _categories_for(count: int, categories: list[Category], rng: random.Random) -> list[Category]:
    """``count`` categories (at least one of each), oversized ones capped."""
    picked = list(categories)
    while len(picked) < count:
        choice = rng.choice(categories)
        if choice.name != "oversized" or sum(c.name == "oversized" for c in picked) < \
                MAX_OVERSIZED:
            picked.append(choice)
    rng.shuffle(picked)
    return picked


def _produce_mixed(settings: Settings, valid: list[ChainRecord], categories: list[Category],
                   rng: random.Random, producer_factory: Callable[..., KafkaProducer],
                   ) -> list[Sent]:
    """The valid records in order, each malformed one right after a random valid record."""
    after: dict[int, list[Category]] = {}
    for category in categories:
        after.setdefault(rng.randrange(1, len(valid)), []).append(category)
    producer = producer_factory(**BIG_REQUESTS)
    pending = []
    for i, record in enumerate(valid):
        topic, key, value = message_for(record, settings.topics)
        producer.send(topic, value=value, key=key)
        for category in after.get(i, []):
            made = category.make(rng, codec.to_wire_dict(record))
            bad = made if isinstance(made, bytes) else orjson.dumps(
                {k: v for k, v in made.items() if v is not None})
            to = settings.topics.labels if category.labels_topic else topic
            pending.append((category, bad, producer.send(to, value=bad, key=key)))
    producer.flush()
    sent = []
    for category, value, future in pending:
        meta = future.get(timeout=30)
        sent.append(Sent(category, value, {"topic": meta.topic, "partition": meta.partition,
                                           "offset": meta.offset}))
    return sent


def _reference_topics(settings: Settings) -> Settings:
    """The same settings with input and alerts topics of their own."""
    names = {f"topics__{role}": unique(f"ref-{role}")
             for role in ("transactions", "dex", "labels", "alerts")}
    reference = settings.replace(consumer_group=unique("g-ref"), **names)
    ensure_topics(reference)
    return reference


def _check_letters(letters: list[dict[str, Any]], sent: list[Sent]) -> dict[str, int]:
    """Every malformed record's letter, once, with an accepted reason; reason → count."""
    by_source: dict[str, list[dict[str, Any]]] = {}
    for letter in letters:
        by_source.setdefault(json.dumps(letter["source"], sort_keys=True), []).append(letter)
    expected = {json.dumps(s.source, sort_keys=True): s for s in sent}
    extra = set(by_source) - set(expected)
    assert not extra, f"valid records were dead-lettered: {sorted(extra)[:5]}"
    reasons: Counter[str] = Counter()
    for source, record in expected.items():
        found = by_source.get(source, [])
        assert len(found) == 1, (record.category.name, source, len(found))
        letter = found[0]
        reason = letter["reason"]
        assert isinstance(reason, str) and reason, letter
        if record.category.reasons:
            assert reason in record.category.reasons, (record.category.name, reason,
                                                       letter["detail"])
        assert record.value.startswith(letter["original"]), record.category.name
        assert letter["original"] == record.value or letter.get("original_truncated"), \
            record.category.name
        assert letter.get("original_size", len(record.value)) == len(record.value)
        reasons[f"{record.category.name}:{reason}"] += 1
    return dict(sorted(reasons.items()))


def _run_mixed(settings: Settings, tmp_path: Path, faults: Faults, *,
               categories: list[Category], producer_factory: Callable[..., KafkaProducer],
               consumer_factory: Callable[..., KafkaConsumer],
               figures: Callable[[str], None], reaper: Reaper) -> None:
    ensure_topics(settings)
    rng = faults.rng(f"malformed/{categories[0].name}")
    valid = chain_records(faults.seed, range(BLOCKS), CAMPAIGNS)
    picked = _categories_for(faults.records, categories, rng)
    sent = _produce_mixed(settings, valid, picked, rng, producer_factory)
    reference = _reference_topics(settings)
    write_records(reference, valid)

    run = settings.replace(checkpoint_uri=str(tmp_path / "ckpt-mixed"))
    log, ref_log = tmp_path / "mixed.log", tmp_path / "reference.log"
    with log.open("w") as out, ref_log.open("w") as ref_out:
        mixed = reaper(start_scorer(run, "--until-caught-up", log=out))
        clean = reaper(start_scorer(reference.replace(
            checkpoint_uri=str(tmp_path / "ckpt-ref")), "--until-caught-up", log=ref_out))
        summary, ref_summary = json.loads(finish(mixed)), json.loads(finish(clean))
    letters = [decode_letter(m.value) for m in drain(consumer_factory(settings.topics.dlq))]
    reasons = _check_letters(letters, sent)
    expected = read_alerts(consumer_factory(reference.topics.alerts))
    diff = AlertDiff.of(read_alerts(consumer_factory(run.topics.alerts)), expected,
                        compare_bytes=False)
    figures(f"malformed={len(sent)} valid={len(valid)} consumed={summary['consumed']} "
            f"scored={summary['scored']} dead_lettered={summary['dead_lettered']} "
            f"letters={len(letters)} alerts={len(expected)} {diff.figures()}")
    figures("reasons: " + ", ".join(f"{k}={v}" for k, v in reasons.items()))
    assert ref_summary["consumed"] == len(valid) and len(expected) >= 3
    assert summary["consumed"] == len(valid) + len(sent)
    assert (summary["scored"], summary["dead_lettered"]) == (len(valid), len(sent))
    assert diff.clean, diff
    assert not tracebacks(log, ref_log)


def test_malformed_records_of_every_category_are_dead_lettered_and_change_no_alert(
        settings: Settings, tmp_path: Path, faults: Faults, *,
        producer_factory: Callable[..., KafkaProducer],
        consumer_factory: Callable[..., KafkaConsumer], figures: Callable[[str], None],
        reaper: Reaper) -> None:
    _run_mixed(settings, tmp_path, faults, categories=CATEGORIES,
               producer_factory=producer_factory, consumer_factory=consumer_factory,
               figures=figures, reaper=reaper)


def test_the_same_chain_produced_twice_is_scored_without_errors_or_lost_alerts(
        settings: Settings, tmp_path: Path, faults: Faults, *,
        consumer_factory: Callable[..., KafkaConsumer], figures: Callable[[str], None],
        reaper: Reaper) -> None:
    """Blocks that go backwards (issue 10: one chain produced twice into one broker) are
    input, not malformed: every record is scored, none is dead-lettered, no traceback, and
    the first pass's alerts are all there. The second pass may raise alerts of its own: it
    is more traffic from the same wallets and pools."""
    ensure_topics(settings)
    valid = chain_records(faults.seed, range(BLOCKS), CAMPAIGNS)
    write_records(settings, valid + valid)
    reference = _reference_topics(settings)
    write_records(reference, valid)
    log, ref_log = tmp_path / "twice.log", tmp_path / "reference.log"
    with log.open("w") as out, ref_log.open("w") as ref_out:
        twice = reaper(start_scorer(settings.replace(checkpoint_uri=str(tmp_path / "ckpt-2")),
                                    "--until-caught-up", log=out))
        once = reaper(start_scorer(reference.replace(checkpoint_uri=str(tmp_path / "ckpt-1")),
                                   "--until-caught-up", log=ref_out))
        summary, ref_summary = json.loads(finish(twice)), json.loads(finish(once))
    letters = drain(consumer_factory(settings.topics.dlq))
    expected = read_alerts(consumer_factory(reference.topics.alerts))
    diff = AlertDiff.of(read_alerts(consumer_factory(settings.topics.alerts)), expected,
                        compare_bytes=False)
    figures(f"records={2 * len(valid)} consumed={summary['consumed']} "
            f"scored={summary['scored']} dead_lettered={summary['dead_lettered']} "
            f"first_pass_alerts={len(expected)} lost={len(diff.lost)} "
            f"second_pass_alerts={len(diff.duplicated)}")
    assert ref_summary["consumed"] == len(valid) and len(expected) >= 3
    assert (summary["consumed"], summary["scored"]) == (2 * len(valid), 2 * len(valid))
    assert summary["dead_lettered"] == 0 and letters == []
    assert not diff.lost, sorted(diff.lost)[:5]
    assert not tracebacks(log, ref_log)
