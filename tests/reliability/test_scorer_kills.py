"""SIGKILLs of scorers at seeded moments while a seeded synthetic stream is produced.

The alerts of the killed-and-restarted run are held to an uninterrupted run over the same
input topics: the same set of ids, every copy byte-identical (see tests/helpers.py).
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaConsumer

from consumers.transactions import supports_transactions
from pipeline.settings import Settings
from pipeline.topics import ensure_topics
from tests.conftest import cli_env
from tests.helpers import (
    AlertDiff,
    alerts_of,
    chain_records,
    drain,
    produce_chain,
    read_alerts,
    scorer_run,
    sigkill,
    start_scorer,
    synth_command,
)
from tests.reliability.conftest import Faults, Reaper
from tests.reliability.procs import (
    covered,
    finish,
    sigkill_after,
    tracebacks,
    wait_covered,
    wait_for_text,
)

pytestmark = [pytest.mark.reliability, pytest.mark.integration]

BLOCKS = 250
CAMPAIGNS = 10.0  # per 1,000 blocks of each type: enough alerts to lose one
QUIET_S = 5.0  # ten checkpoint intervals
OPEN_TIMEOUT_S = 120  # a restarted member joins once its killed self's session expired
# seconds of stream per kill: a restart holds tasks within ~10 s (the killed member's session
# expires) and is killed up to 2.5 s later, so every kill falls inside the stream
KILL_S = 16.0


def _stream(settings: Settings, faults: Faults, seconds: float,
            reaper: Reaper) -> tuple[subprocess.Popen[str], int]:
    """``chainwatch produce synth`` paced to last about ``seconds``, and its record count."""
    events = len(chain_records(faults.seed, range(BLOCKS), CAMPAIGNS))
    return reaper(subprocess.Popen(
        synth_command(faults.seed, BLOCKS, max(events / seconds, 50.0), CAMPAIGNS),
        env=cli_env(settings), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        text=True)), events


def _reference(settings: Settings, tmp: Path,
               reaper: Reaper) -> tuple[Settings, subprocess.Popen[str]]:
    """An uninterrupted run over the same input, started once the input is complete."""
    reference = scorer_run(settings, tmp, "reference")
    return reference, reaper(start_scorer(reference, "--until-caught-up"))


def _compare(run: Settings, reference: Settings, ref_summary: dict[str, Any], *, kills: int,
             logs: list[Path], consumer_factory: Callable[..., KafkaConsumer],
             figures: Callable[[str], None]) -> None:
    """Hold the run's alerts to those of the (finished) reference run."""
    expected = read_alerts(consumer_factory(reference.topics.alerts))
    messages = drain(consumer_factory(run.topics.alerts))  # read_committed
    got = alerts_of(messages)
    diff = AlertDiff.of(got, expected)
    copies = len(messages) - len(got)
    figures(f"kills={kills} records={ref_summary['consumed']} alerts={len(expected)} "
            f"{diff.figures()} re-sent copies={copies}")
    assert len(expected) >= 5, ref_summary  # the stream raises alerts worth losing
    assert not tracebacks(*logs)
    assert diff.clean, diff
    if supports_transactions(run):  # exactly once: not even a byte-identical second copy
        assert copies == 0, f"{copies} alerts reached a read_committed reader twice"


def _opened(log: Path, proc: subprocess.Popen[str]) -> float:
    """Seconds until ``proc`` holds tasks (its log says a task opened)."""
    started = time.monotonic()
    assert wait_for_text(log, "opened", OPEN_TIMEOUT_S, proc), log.read_text()
    return time.monotonic() - started


def test_random_sigkills_of_one_scorer_lose_nothing(
        settings: Settings, tmp_path: Path, faults: Faults, *,
        consumer_factory: Callable[..., KafkaConsumer], figures: Callable[[str], None],
        reaper: Reaper) -> None:
    ensure_topics(settings)
    run = scorer_run(settings, tmp_path, "killed")
    rng = faults.rng("one-scorer")
    stream, _ = _stream(settings, faults, KILL_S * faults.kills, reaper)
    logs, waits = [], []
    for kill in range(faults.kills):
        logs.append(tmp_path / f"scorer-{kill}.log")
        with logs[-1].open("w") as log:
            proc = reaper(start_scorer(run, log=log))
            waits.append(_opened(logs[-1], proc))
            sigkill_after(proc, rng.uniform(0.0, 2.5))  # a seeded moment once it holds tasks
    figures("seconds to hold tasks after each start: " + " ".join(f"{w:.1f}" for w in waits))
    finish(stream, timeout_s=22.0 * faults.kills + 300)
    reference = _reference(settings, tmp_path, reaper)
    logs.append(tmp_path / "finisher.log")
    with logs[-1].open("w") as log:  # restarted once more, it scores what is left
        summary = json.loads(finish(reaper(start_scorer(run, "--until-caught-up", log=log))))
    assert summary["dead_lettered"] == 0
    _compare(run, reference[0], json.loads(finish(reference[1])), kills=faults.kills,
             logs=logs, consumer_factory=consumer_factory, figures=figures)


def test_random_sigkills_of_one_of_two_scorers_lose_nothing(
        settings: Settings, tmp_path: Path, faults: Faults, *,
        consumer_factory: Callable[..., KafkaConsumer], figures: Callable[[str], None],
        reaper: Reaper) -> None:
    ensure_topics(settings)
    run = scorer_run(settings, tmp_path, "pair")
    rng = faults.rng("two-scorers")
    # a killed member's tasks wait for its session to expire (10 s) before they move
    stream, events = _stream(settings, faults, KILL_S * faults.kills, reaper)
    members: list[subprocess.Popen[str]] = []
    logs = [tmp_path / "member-0-0.log", tmp_path / "member-1-0.log"]
    for path in logs:
        with path.open("w") as log:
            members.append(reaper(start_scorer(run, log=log)))
    waits, victims = [], []
    for kill in range(faults.kills):
        victims.append(victim := rng.randrange(2))
        waits.append(_opened(logs[victim], members[victim]))
        sigkill_after(members[victim], rng.uniform(0.0, 2.0))
        logs.append(tmp_path / f"member-{victim}-{kill + 1}.log")
        with logs[-1].open("w") as log:
            members[victim] = reaper(start_scorer(run, log=log))
        logs[victim], logs[-1] = logs[-1], logs[victim]  # logs[0..1]: the current members
    figures(f"victims={victims}; seconds until the victim held tasks: "
            + " ".join(f"{w:.1f}" for w in waits))
    finish(stream, timeout_s=22.0 * faults.kills + 300)
    reference = _reference(settings, tmp_path, reaper)
    ref_summary = json.loads(finish(reference[1]))  # meanwhile, the pair scores the rest
    while_running = covered(run)
    for member in members:
        member.send_signal(signal.SIGTERM)  # a clean stop checkpoints what it has read
    for member in members:
        finish(member, timeout_s=60)
    figures(f"the pair read {covered(run)} of {events} records ({while_running} checkpointed "
            "before their clean stop)")
    assert covered(run) == events
    _compare(run, reference[0], ref_summary, kills=faults.kills, logs=logs,
             consumer_factory=consumer_factory, figures=figures)



def test_a_scorer_killed_in_a_quiet_spell_has_checkpointed_what_it_read(
        settings: Settings, tmp_path: Path, faults: Faults, *,
        figures: Callable[[str], None], reaper: Reaper) -> None:
    """``--checkpoint-interval`` (0.5 s here): a task with new records is checkpointed within
    that long, also when no more records come; so a SIGKILL in a quiet spell loses no work."""
    ensure_topics(settings)
    run = scorer_run(settings, tmp_path, "quiet")
    log_path = tmp_path / "scorer.log"
    with log_path.open("w") as log:
        scorer = reaper(start_scorer(run, log=log))
        _opened(log_path, scorer)
        events = produce_chain(settings, faults.seed, range(60))
        quiet_s = wait_covered(run, events, [scorer], timeout_s=QUIET_S)
        read = covered(run)
        sigkill(scorer)
    figures(f"records={events} checkpointed={read} before a SIGKILL "
            + (f"({quiet_s:.1f} s after the input went quiet)" if quiet_s is not None
               else f"{QUIET_S:.0f} s after the input went quiet"))
    assert read == events
