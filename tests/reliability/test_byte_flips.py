"""Seeded random bit flips of a sealed audit store and of a scorer's checkpoint files.

Audit store: ``chainwatch audit verify`` says FAILED or UNREADABLE and exits non-zero for
every flipped copy, without a traceback.

Checkpoints: every flipped file is refused on load — whether its name keeps the old digest,
or it was renamed to the new one, as someone who can write the store but lacks the key
would — and the store falls back to the newest intact checkpoint of the task. Then, with
the newest checkpoint of every task flipped, ``chainwatch score`` opens each task from the
one before, says nothing but warnings, and re-sends only byte-identical alerts.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from kafka import KafkaConsumer

from pipeline.audit import AuditLog, Leaf, Signer
from pipeline.checkpoint_key import CheckpointKey
from pipeline.checkpoints import CheckpointRef, CheckpointStore
from pipeline.errors import CheckpointError
from pipeline.settings import Settings
from pipeline.topics import ensure_topics
from tests.conftest import CHAINWATCH
from tests.helpers import (
    AlertDiff,
    chain_records,
    checkpoint_key_file,
    make_alert,
    read_alerts,
    scorer_run,
    start_scorer,
    write_records,
)
from tests.reliability.conftest import Faults, Reaper
from tests.reliability.procs import finish, tracebacks

pytestmark = [pytest.mark.reliability]

AUDIT_LEAVES, AUDIT_BATCH = 120, 20


def _flip(blob: bytes, at: int, bit: int) -> bytes:
    out = bytearray(blob)
    out[at] ^= 1 << bit
    return bytes(out)


def test_byte_flips_of_a_sealed_audit_store_are_each_detected(
        tmp_path: Path, faults: Faults, figures: Callable[[str], None]) -> None:
    store, signer = tmp_path / "audit.db", Signer.generate()
    with AuditLog.open(store, signer) as log:  # closing it seals it
        for start in range(0, AUDIT_LEAVES, AUDIT_BATCH):
            log.append([Leaf.from_alert(make_alert(i)) for i in range(start, start + AUDIT_BATCH)],
                       {("chainwatch.alerts", 0): start + AUDIT_BATCH})

    def verify(path: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run([CHAINWATCH, "audit", "verify", "--store", str(path),
                               "--public-key", signer.public_hex()],
                              capture_output=True, text=True, timeout=120, check=False)

    good = verify(store)
    assert good.returncode == 0 and good.stdout.startswith("OK"), good.stdout + good.stderr
    original, rng = store.read_bytes(), faults.rng("audit-store")
    flips = [(rng.randrange(len(original)), rng.randrange(8)) for _ in range(faults.flips)]

    def verify_flipped(n: int) -> tuple[int, int, subprocess.CompletedProcess[str]]:
        at, bit = flips[n]
        folder = tmp_path / f"flip-{n}"  # its own folder: no WAL of another copy beside it
        folder.mkdir()
        (folder / "audit.db").write_bytes(_flip(original, at, bit))
        return at, bit, verify(folder / "audit.db")

    outcomes: Counter[str] = Counter()
    missed, crashed = [], []
    with ThreadPoolExecutor(2) as pool:  # one verifier process per core
        for at, bit, result in pool.map(verify_flipped, range(len(flips))):
            verdict = re.match(r"(OK|FAILED|UNREADABLE)\b", result.stdout)
            outcomes[verdict[1] if verdict else "other"] += 1
            if result.returncode == 0 or not verdict or verdict[1] == "OK":
                missed.append((at, bit, result.returncode, result.stdout[:200]))
            if "Traceback" in result.stdout + result.stderr:
                crashed.append((at, bit, result.stderr[-300:]))
    figures(f"flips={faults.flips} file_bytes={len(original)} "
            + " ".join(f"{k}={v}" for k, v in sorted(outcomes.items()))
            + f" missed={len(missed)} tracebacks={len(crashed)}")
    assert not missed, missed[:5]
    assert not crashed, crashed[:3]


# -- checkpoints ------------------------------------------------------------------------------


def _path(ref: CheckpointRef) -> Path:
    return Path(unquote(urlsplit(ref.uri).path))


def _tamper(ref: CheckpointRef, pristine: bytes, at: int, bit: int, redigest: bool) -> Path:
    """Flip one bit of ``ref``'s file; with ``redigest``, rename it to its new digest.
    Returns the flipped file's path."""
    flipped, path = _flip(pristine, at, bit), _path(ref)
    if not redigest:
        path.write_bytes(flipped)
        return path
    path.unlink()
    renamed = path.with_name(f"{ref.seq:012d}-{hashlib.sha256(flipped).hexdigest()}.ckpt")
    renamed.write_bytes(flipped)
    return renamed


def _load_outcome(store: CheckpointStore, ref: CheckpointRef) -> str:
    try:
        store.load(ref)
    except CheckpointError:
        return "refused"
    except Exception as exc:  # anything but a CheckpointError is a crash in a scorer
        return f"raised {type(exc).__name__}: {exc}"
    return "loaded"


def _check_one_flip(store: CheckpointStore, group: str, task: str, ref: CheckpointRef,
                    expected: CheckpointRef | None) -> list[str]:
    """What went wrong with ``ref`` flipped: [] when every load refused it and the store
    fell back to ``expected``."""
    problems = []
    try:
        listed = [r for r in store.list(group, task) if r.seq == ref.seq]
        found = store.load_newest_good(group, task)
    except Exception as exc:
        return [f"listing raised {type(exc).__name__}: {exc}"]
    for candidate in [ref, *listed]:
        outcome = _load_outcome(store, candidate)
        if outcome != "refused":
            problems.append(f"seq {ref.seq}: {outcome}")
    if (found[0] if found else None) != expected:
        problems.append(f"fell back to {found[0].seq if found else None}, expected "
                        f"{expected.seq if expected else None}")
    return problems


def test_byte_flips_of_checkpoints_are_each_refused_and_the_scorer_falls_back(
        settings: Settings, tmp_path: Path, faults: Faults, *,
        consumer_factory: Callable[..., KafkaConsumer], figures: Callable[[str], None],
        reaper: Reaper) -> None:
    ensure_topics(settings)
    run = scorer_run(settings, tmp_path, "flips")
    first_log = tmp_path / "first.log"
    with first_log.open("w") as log:
        records = chain_records(faults.seed, range(120), campaign_rate=10.0)
        for half in (records[: len(records) // 2], records[len(records) // 2 :]):
            write_records(settings, half)  # two runs: at least two checkpoints per task
            finish(reaper(start_scorer(run, "--until-caught-up", log=log)))
    store = CheckpointStore.from_uri(run.checkpoint_uri,
                                     key=CheckpointKey.load(checkpoint_key_file(run)))
    group = run.consumer_group
    refs = {task: store.list(group, task) for task in store.tasks(group)}
    assert len(refs) == 4 and all(len(r) >= 2 for r in refs.values()), refs
    pristine = {ref: _path(ref).read_bytes() for task_refs in refs.values() for ref in task_refs}

    rng = faults.rng("checkpoints")
    problems: list[str] = []
    kinds: Counter[str] = Counter()
    for _ in range(faults.flips):
        task = rng.choice(sorted(refs))
        ref = rng.choice(refs[task])
        at, bit, redigest = rng.randrange(len(pristine[ref])), rng.randrange(8), rng.random() < 0.5
        kinds["renamed" if redigest else "in place"] += 1
        flipped = _tamper(ref, pristine[ref], at, bit, redigest)
        try:
            intact = [r for r in refs[task] if r != ref]
            problems += [f"{task} byte {at} bit {bit} {'renamed' if redigest else 'in place'}: "
                         f"{p}" for p in _check_one_flip(store, group, task, ref, intact[-1])]
        finally:
            flipped.unlink()
            _path(ref).write_bytes(pristine[ref])
    figures(f"checkpoint flips={faults.flips} ({', '.join(f'{k} {v}' for k, v in kinds.items())})"
            f" refused={faults.flips - len(problems)} problems={len(problems)}")
    assert not problems, problems[:5]

    # the scorer itself, with the newest checkpoint of every task flipped
    before = read_alerts(consumer_factory(run.topics.alerts))
    for task in sorted(refs):
        newest = refs[task][-1]
        _tamper(newest, pristine[newest], rng.randrange(len(pristine[newest])), rng.randrange(8),
                redigest=rng.random() < 0.5)
    again_log = tmp_path / "again.log"
    with again_log.open("w") as log:
        summary = json.loads(finish(reaper(start_scorer(run, "--until-caught-up", log=log))))
    opened = dict(re.findall(r"task (p\d+) opened from checkpoint (\d+)", again_log.read_text()))
    expected = {task: str(task_refs[-2].seq) for task, task_refs in refs.items()}
    diff = AlertDiff.of(read_alerts(consumer_factory(run.topics.alerts)), before)
    figures(f"scorer over flipped newest checkpoints: opened {opened} (expected {expected}), "
            f"re-read {summary['consumed']} records, alerts {diff.figures()}")
    assert opened == expected
    assert summary["consumed"] > 0 and summary["dead_lettered"] == 0
    assert diff.clean, diff
    assert not tracebacks(first_log, again_log)
