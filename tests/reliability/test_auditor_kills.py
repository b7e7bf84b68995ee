"""SIGKILLs of ``chainwatch audit serve`` at seeded moments while alerts flow in.

Alerts arrive in batches, some re-sent (as a restarted scorer re-sends them). At the end the
log holds every alert exactly once and ``chainwatch audit verify`` passes.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from kafka import KafkaProducer

from pipeline.audit import AuditReader, Leaf
from pipeline.settings import Settings
from pipeline.topics import ensure_topics
from tests.conftest import CHAINWATCH, cli_env
from tests.helpers import send_alerts
from tests.reliability.conftest import Faults
from tests.reliability.procs import finish, sigkill_after, tracebacks

pytestmark = [pytest.mark.reliability, pytest.mark.integration]

BATCH = 400  # alerts per batch; the last RESENT of each batch are sent again with the next
RESENT = 40


def _log_size(store: Path) -> int:
    """Leaves in the log now (0 while it does not exist yet or is being created)."""
    try:
        with AuditReader.open(store) as reader:
            return reader.size
    except Exception:  # the auditor is creating it, or was killed while it did
        return 0


def _wait_for_growth(store: Path, above: int, proc: subprocess.Popen[bytes],
                     timeout_s: float = 60) -> int:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.poll() is None:
        size = _log_size(store)
        if size > above:
            return size
        time.sleep(0.05)
    raise AssertionError(f"the auditor appended nothing within {timeout_s:.0f} s "
                         f"(exit status {proc.poll()})")


def test_random_sigkills_of_the_auditor_append_every_alert_once(
        settings: Settings, tmp_path: Path, faults: Faults,
        producer_factory: Callable[..., KafkaProducer], figures: Callable[[str], None]) -> None:
    store = tmp_path / "audit" / "audit.db"
    audited = settings.replace(audit__store=str(store))
    ensure_topics(audited)
    env = cli_env(audited) | {"CHAINWATCH_AUDIT_STORE": str(store)}
    rng = faults.rng("auditor")

    sent: Counter[str] = Counter()
    encoded: dict[str, bytes] = {}  # alert id -> its leaf's bytes
    done = threading.Event()

    def flow() -> None:  # about 2.5 s of alerts per kill, in batches
        start = 0
        for _ in range(max(int(faults.kills * 2.5 / 0.2), 5)):
            ids = range(max(start - RESENT, 0), start + BATCH)
            for alert in send_alerts(audited, ids, producer_factory):
                sent[alert.alert_id] += 1
                encoded[alert.alert_id] = Leaf.from_alert(alert).data
            start += BATCH
            time.sleep(0.2)
        done.set()

    sender = threading.Thread(target=flow, daemon=True)
    sender.start()
    logs = []
    size = 0
    for kill in range(faults.kills):
        logs.append(tmp_path / f"auditor-{kill}.log")
        with logs[-1].open("w") as log:
            # a short session: the next one takes the lease soon after this one is killed
            serve = subprocess.Popen([CHAINWATCH, "audit", "serve", "--log-level", "INFO",
                                      "--session-timeout", "2"],
                                     env=env, stdout=subprocess.DEVNULL, stderr=log)
            size = _wait_for_growth(store, size, serve)
            sigkill_after(serve, rng.uniform(0.0, 1.5))
    sender.join(timeout=120)
    assert done.is_set(), "the alerts did not all go out"

    logs.append(tmp_path / "auditor-final.log")
    with logs[-1].open("w") as log:
        summary = json.loads(finish(subprocess.Popen(
            [CHAINWATCH, "audit", "serve", "--until-caught-up", "--json",
             "--session-timeout", "2"], env=env,
            stdout=subprocess.PIPE, stderr=log, text=True)))
    verify = subprocess.run([CHAINWATCH, "audit", "verify"], env=env, capture_output=True,
                            text=True, timeout=300, check=False)
    with AuditReader.open(store) as reader:
        stored = [reader.leaf(i) for i in range(reader.size)]
    leaves = Counter(leaf.id for leaf in stored)
    lost = set(sent) - set(leaves)
    duplicated = {i for i, n in leaves.items() if n > 1}
    changed = {leaf.id for leaf in stored if encoded.get(leaf.id) != leaf.data}
    figures(f"kills={faults.kills} alerts={len(sent)} sent={sum(sent.values())} "
            f"leaves={sum(leaves.values())} lost={len(lost)} duplicated={len(duplicated)} "
            f"changed={len(changed)}")
    assert summary["tree_size"] == sum(leaves.values())
    assert not lost and not duplicated and not changed
    assert verify.returncode == 0 and verify.stdout.startswith("OK"), verify.stdout
    assert not tracebacks(*logs) and "Traceback" not in verify.stdout + verify.stderr
