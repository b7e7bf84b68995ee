"""SIGKILLs of ``chainwatch alerts notify`` at seeded moments while alerts stream in and the
receiver fails some requests with 500.

Alerts of every severity stream onto the alerts topic, and ``chainwatch alerts notify`` (the
command as a user types it, ``--min-severity medium``, started again after each kill with the
same ``--group``) POSTs them to a real local receiver (:class:`tests.webhook_server.WebhookServer`),
which keeps every request (body and ``Idempotency-Key``) and answers from a seeded script: 200
after a short delay, so a backlog takes seconds to deliver, or 500 for about one request in
eight, never more than twice in a row (below the 5 retries: no alert is dead-lettered), so
kills fall among retries and retried alerts. A burst of alerts goes out before each start of a
run to be killed, and a trickle until the last kill, so each such run begins with a backlog of
about two hundred alerts that piled up while it joined. Each of the ``--fault-kills`` runs is
SIGKILLed at a seeded moment after its first request (seeded by ``--fault-seed``): the even
ones within its first second (mostly before it committed anything), the odd ones 2 to 2.75 s
in (after commits); the test checks that each kill came while requests were still arriving.
The last start runs ``--until-caught-up`` once the stream has ended.

The contract held (consumers/notifier.py: at least once):

* nothing lost: every alert at or above the filter got a 2xx at least once;
* the filter: no request at all for an alert below it;
* one key per alert: every copy of a body (first, retried after a 500, or sent again after a
  kill) carries the same ``Idempotency-Key``, the alert's id, and the body is the alert's wire
  JSON byte for byte; de-duplicated on that key, the receiver's set is the expected set exactly;
* duplicates bounded by what was in flight. The notifier commits the group's offsets past the
  alerts it has finished, and only those: synchronously at the end of each polled batch (at
  most ``max_batch`` records) and at least every ``COMMIT_EVERY_S`` within one; a restart
  resumes at the committed offsets. In flight at kill *k* are the alerts the receiver had
  accepted (before the next start) at or past the group's committed offset of their partition,
  read just after the kill: only those may be sent again. The killed run's own part of them
  is in the batch it was in and no older than the last commit; the rest were left by an earlier
  kill in partitions this run had not reached yet. The test holds every alert 2xx'd again by a
  run to the in-flight set of the kill before it, allows no alert two 2xx copies within one
  run, holds each killed run's own in-flight alerts to at most ``max_batch``, all delivered
  within the last ``COMMIT_EVERY_S`` (plus a slack for one alert's retries and the commit's
  round trip), and the committed offsets to never go back. Each duplicate is then the re-send
  of one run's own in-flight alert (of the last run that had delivered it), so duplicates are
  at most the sum of those: at most kills x ``max_batch``, in practice about a second's
  deliveries per kill.

It fails if the notifier committed before delivering (a kill mid-batch loses the rest of the
batch), committed only when it exits (the late kills find older alerts in flight), never
committed (the group's final position), or sent a retry or a re-send under another key.

A restarted member holds the partitions only once its killed self's session has expired:
every run is started with ``--session-timeout 2`` (the default 10 s made each restart wait
about 20 s on the local broker, most of this test's time), so a restart delivers within about
3 s. The burst is sized so that the backlog a run begins with is still about two hundred
alerts, as it was with the 10 s session (150 plus a trickle of ~20 s).
"""

from __future__ import annotations

import bisect
import inspect
import itertools
import json
import random
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaProducer

from consumers.notifier import COMMIT_EVERY_S, NotifierService
from pipeline import clients
from pipeline.alerts import SEVERITIES, Alert
from pipeline.settings import Settings, env_var
from pipeline.topics import ensure_topics
from tests.conftest import CHAINWATCH, cli_env, unique
from tests.reliability.conftest import Faults, Reaper
from tests.reliability.procs import finish, sigkill_after, tracebacks
from tests.webhook_server import Received, Reply, WebhookServer

pytestmark = [pytest.mark.reliability, pytest.mark.integration]

MIN_SEVERITY = "medium"  # 3 of the 5 severities are sent
BURST = 190  # alerts sent before each start ...
CHUNK, TICK_S = 1, 0.5  # ... and 2/s until the last kill: ~195 waiting when a restart joins
SESSION_S = "2"  # --session-timeout of every run: a killed run's partitions free up soon
DELAY_S = 0.02  # before each 200: the ~110 wanted of them take 3 s or more
FAIL_RATE = 0.12  # requests answered 500 ...
FAILS_IN_A_ROW = 2  # ... at most this many in a row
BACKOFF_MS = 20  # the first wait before a retry (then doubled)
EARLY_S = (0.0, 1.0)  # even kills: seconds after the run's first request
LATE_S = (2.0, 2.75)  # odd kills
COMMIT_SLACK_S = 0.75  # one alert's retries and waits, and a commit's round trip
BUSY_S = 0.5  # a kill is mid-delivery when the receiver got a request this recently
SETTLE_S = 0.2  # after a kill: anything the dead process sent has arrived
JOIN_TIMEOUT_S = 90.0  # start to first request (the killed member's session expires first)
MAX_BATCH = int(inspect.signature(NotifierService).parameters["max_batch"].default)


@dataclass(frozen=True)
class Sent:
    raw: bytes
    severity: str
    partition: int
    offset: int


def _alert(i: int, severity: str) -> Alert:
    """The ``i``-th of a family of distinct alerts, of ``severity``."""
    return Alert.build(type="rug_pull", severity=severity, score=0.9, subject=f"0x{i:040x}",
                       detector="liquidity_drain", model_version="1", evidence={"drop": 0.95},
                       source={"topic": "chain.dex", "partition": i % 4, "offset": i,
                               "item_ids": [f"log_{i}"]}, event_time=i, detected_at=i)


class _Stream:
    """Alerts to the alerts topic, keyed by subject, each severity drawn from a seeded
    generator: bursts with :meth:`send`, and a trickle from :meth:`start` to :meth:`finish`.
    ``sent`` has each one's bytes, severity and place."""

    def __init__(self, settings: Settings, producer: KafkaProducer, rng: random.Random) -> None:
        self.settings, self.producer, self.rng = settings, producer, rng
        self.sent: dict[str, Sent] = {}
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._trickle, daemon=True)

    def send(self, n: int) -> None:
        with self._lock:
            start = len(self.sent)
            alerts = [_alert(i, self.rng.choice(SEVERITIES)) for i in range(start, start + n)]
            futures = [self.producer.send(self.settings.topics.alerts, value=a.to_json(),
                                          key=a.subject.encode()) for a in alerts]
            self.producer.flush()
            for a, future in zip(alerts, futures, strict=True):
                meta = future.get(timeout=10)
                self.sent[a.alert_id] = Sent(a.to_json(), a.severity, meta.partition,
                                             meta.offset)

    def start(self) -> None:
        self._thread.start()

    def _trickle(self) -> None:
        try:
            while not self.stop.wait(TICK_S):
                self.send(CHUNK)
        except BaseException as exc:  # raised again by finish()
            self.error = exc

    def finish(self) -> None:
        self.stop.set()
        self._thread.join(30)
        assert not self._thread.is_alive(), "the alert stream did not stop"
        if self.error is not None:
            raise self.error

    def ends(self) -> dict[int, int]:
        """partition -> the offset after its last alert."""
        ends: dict[int, int] = {}
        for s in self.sent.values():
            ends[s.partition] = max(ends.get(s.partition, 0), s.offset + 1)
        return ends


def _script(rng: random.Random, length: int) -> list[Reply]:
    """The receiver's answers, one per request in order: 200 (after DELAY_S) or 500."""
    ok, fail = Reply(200, delay_s=DELAY_S), Reply(500)
    script: list[Reply] = []
    streak = 0
    for _ in range(length):
        streak = streak + 1 if streak < FAILS_IN_A_ROW and rng.random() < FAIL_RATE else 0
        script.append(fail if streak else ok)
    return [*script, ok]  # the last answer repeats


def _committed(settings: Settings, group: str) -> dict[int, int]:
    """partition -> the offset ``group`` has committed on the alerts topic."""
    admin = clients.admin(settings)
    try:
        offsets = admin.list_group_offsets(group)[group]
    finally:
        admin.close()
    return {tp.partition: m.offset for tp, m in offsets.items()
            if tp.topic == settings.topics.alerts and m.offset >= 0}


def _key(request: Received) -> str:
    headers = {name.lower(): value for name, value in request.headers.items()}
    return headers.get("idempotency-key", "")


def _first_request(server: WebhookServer, since: float, proc: subprocess.Popen[str],
                   log: Path) -> float:
    """The time of the receiver's first request after ``since``."""
    deadline = since + JOIN_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.requests and server.requests[-1].at >= since:
            return next(r.at for r in server.requests if r.at >= since)
        assert proc.poll() is None, log.read_text()
        time.sleep(0.02)
    raise AssertionError(f"no request within {JOIN_TIMEOUT_S:.0f} s of a start:\n"
                         f"{log.read_text()}")


@dataclass
class Runs:
    """What the test saw: each run's start, and for each kill its time, the group's offsets
    just after it, and whether the receiver was busy then."""

    starts: list[float]
    kills: list[float]
    committed: list[dict[int, int]]
    busy: list[bool]
    in_retry: list[bool]
    first: list[float]


def test_random_sigkills_of_the_notifier_lose_nothing_and_resend_only_what_was_in_flight(
        settings: Settings, tmp_path: Path, faults: Faults, *,
        producer_factory: Callable[..., KafkaProducer], figures: Callable[[str], None],
        reaper: Reaper) -> None:
    ensure_topics(settings)
    group = unique("notify")
    script = _script(faults.rng("notifier/replies"), 200_000)
    kill_rng = faults.rng("notifier/kills")
    stream = _Stream(settings, producer_factory(), faults.rng("notifier/severities"))
    runs = Runs([], [], [], [], [], [])
    logs: list[Path] = []
    with WebhookServer(script) as server:
        env = cli_env(settings) | {env_var("notify.webhook_url"): server.url(),
                                   env_var("notify.backoff_ms"): str(BACKOFF_MS)}
        command = [CHAINWATCH, "alerts", "notify", "--group", group,
                   "--min-severity", MIN_SEVERITY, "--session-timeout", SESSION_S,
                   "--log-level", "INFO"]
        stream.start()
        for kill in range(faults.kills):
            stream.send(BURST)
            logs.append(tmp_path / f"notify-{kill}.log")
            with logs[-1].open("w") as log:
                runs.starts.append(time.monotonic())
                proc = reaper(subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                                               stderr=log, text=True))
                runs.first.append(_first_request(server, runs.starts[-1], proc, logs[-1]))
                moment = runs.first[-1] + kill_rng.uniform(*(LATE_S if kill % 2 else EARLY_S))
                sigkill_after(proc, max(moment - time.monotonic(), 0.0))
            runs.kills.append(time.monotonic())
            last = len(server.requests) - 1
            runs.busy.append(runs.kills[-1] - server.requests[last].at < BUSY_S)
            runs.in_retry.append(script[min(last, len(script) - 1)].status != 200)
            time.sleep(SETTLE_S)
            runs.committed.append(_committed(settings, group))
        stream.finish()  # every kill came while alerts were still streaming in
        logs.append(tmp_path / "notify-final.log")
        with logs[-1].open("w") as log:
            runs.starts.append(time.monotonic())
            final = reaper(subprocess.Popen([*command, "--until-caught-up", "--json"], env=env,
                                            stdout=subprocess.PIPE, stderr=log, text=True))
            summary = json.loads(finish(final, timeout_s=JOIN_TIMEOUT_S + 120))
        requests = list(server.requests)
    _check(requests, script, stream, runs, summary=summary, kills=faults.kills,
           figures=figures)
    assert not tracebacks(*logs)
    assert not [p.name for p in logs if "dead-lettered" in p.read_text()]
    assert summary["dead_lettered"] == 0, summary
    final_offsets = _committed(settings, group)
    assert final_offsets == stream.ends(), "the group's position is not past every alert"


def _check(requests: list[Received], script: list[Reply], stream: _Stream, runs: Runs, *,
           summary: dict[str, Any], kills: int, figures: Callable[[str], None]) -> None:
    """Hold what the receiver got to the contract (see the module docstring)."""
    sent = stream.sent
    wanted = SEVERITIES.index(MIN_SEVERITY)
    expected = {i for i, s in sent.items() if SEVERITIES.index(s.severity) >= wanted}
    below = set(sent) - expected
    status = [script[min(n, len(script) - 1)].status for n in range(len(requests))]
    run_of = [bisect.bisect_right(runs.starts, r.at) - 1 for r in requests]
    keys = [_key(r) for r in requests]
    delivered = [n for n in range(len(requests)) if 200 <= status[n] < 300]
    copies = Counter(keys[n] for n in delivered)

    # in flight at each kill: accepted before the next start, at or past the committed offsets
    in_flight: list[set[str]] = []
    own: list[set[str]] = []  # of those, the ones the killed run had delivered itself
    ages: list[float] = []  # the oldest of its own, at the kill
    for k, offsets in enumerate(runs.committed):
        accepted = {keys[n] for n in delivered if run_of[n] <= k}
        in_flight.append({i for i in accepted if i in sent
                          and sent[i].offset >= offsets.get(sent[i].partition, 0)})
        mine = [n for n in delivered if run_of[n] == k and keys[n] in in_flight[-1]]
        own.append({keys[n] for n in mine})
        ages.append(max((runs.kills[k] - requests[n].at for n in mine), default=0.0))
    again: list[set[str]] = []  # per run: alerts it 2xx'd that an earlier run had 2xx'd
    twice_in_a_run: set[str] = set()
    seen: set[str] = set()
    for run in range(len(runs.starts)):
        in_run = [keys[n] for n in delivered if run_of[n] == run]
        twice_in_a_run |= {i for i, c in Counter(in_run).items() if c > 1}
        again.append(set(in_run) & seen)
        seen |= set(in_run)
    duplicates = sum(copies.values()) - len(copies)
    figures(f"kills={kills} alerts={len(sent)} wanted={len(expected)} "
            f"requests={len(requests)} answered_500={status.count(500)} "
            f"duplicates={duplicates} lost={len(expected - set(copies))}")
    figures("after each kill: in flight " + " ".join(str(len(s)) for s in in_flight)
            + ", the killed run's own " + " ".join(str(len(s)) for s in own)
            + " (the oldest " + " ".join(f"{a:.2f}" for a in ages)
            + " s old), sent again " + " ".join(str(len(s)) for s in again[1:])
            + f"; kills mid-delivery {sum(runs.busy)}/{kills}, while an alert awaited a "
            f"retry {sum(runs.in_retry)}; seconds to the first request "
            + " ".join(f"{f - s:.1f}" for f, s in zip(runs.first, runs.starts, strict=False))
            + f"; final run {summary['elapsed_s']:.1f} s, {summary['retries']} retries")

    assert status.count(500) > 0, "no request was answered 500"
    assert all(runs.busy), "a kill came while the notifier had nothing to deliver"
    # one key per alert, its own id, on its exact bytes; each body under one key only
    bodies: dict[bytes, set[str]] = {}
    for key, request in zip(keys, requests, strict=True):
        bodies.setdefault(request.body, set()).add(key)
    assert all(len(k) == 1 for k in bodies.values()), "one body under two keys"
    assert not [k for k, r in zip(keys, requests, strict=True)
                if k not in sent or r.body != sent[k].raw], "a body that is not its key's alert"
    # the filter; nothing lost; de-duplicated on the key, the expected set exactly
    assert not set(keys) & below, "an alert below the filter was sent"
    lost = expected - set(copies)
    assert not lost, f"{len(lost)} alerts lost, among them {sorted(lost)[:5]}"
    assert set(copies) == expected
    # duplicates: only what a kill left in flight, and each at most once per run
    assert not twice_in_a_run, f"2xx'd twice within one run: {sorted(twice_in_a_run)}"
    assert not again[0]
    for k, flying in enumerate(in_flight):
        assert again[k + 1] <= flying, f"sent again after kill {k}, not in flight then: " \
            f"{sorted(again[k + 1] - flying)[:5]}"
        assert len(own[k]) <= MAX_BATCH, f"kill {k} found {len(own[k])} of its run's alerts " \
            "uncommitted"
        assert ages[k] <= COMMIT_EVERY_S + COMMIT_SLACK_S, \
            f"kill {k} found an alert delivered {ages[k]:.2f} s before it still uncommitted"
    for before, after in itertools.pairwise(runs.committed):
        assert all(after.get(p, 0) >= offset for p, offset in before.items()), \
            f"the committed offsets went back: {before} then {after}"
    assert duplicates == sum(len(s) for s in again) <= sum(len(s) for s in own)
