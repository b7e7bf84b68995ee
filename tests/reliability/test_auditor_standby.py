"""Two ``chainwatch audit serve`` on one log, as a user starts them: one appends, the other
stands by; SIGKILL the writer mid-stream and the standby takes over; SIGSTOP it and the
standby takes the lease, and the writer, resumed, appends nothing more. Either way the log
ends with every alert exactly once, no gap, and ``chainwatch audit verify`` passes."""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaProducer

from pipeline.audit import AuditReader
from pipeline.settings import Settings
from pipeline.topics import ensure_topics
from tests.conftest import CHAINWATCH, cli_env, free_port, http_get
from tests.helpers import send_alerts
from tests.reliability.conftest import Reaper
from tests.reliability.procs import tracebacks, wait_for_text

pytestmark = [pytest.mark.reliability, pytest.mark.integration]

SESSION_S = "2"  # a crashed writer keeps the lease this long
TAKEOVER_S = 40  # session expiry, a rebalance and a slow start on a busy machine, with margin


class Auditor:
    """One ``chainwatch audit serve --metrics-port P`` with its log file."""

    def __init__(self, env: dict[str, str], tmp_path: Path, name: str, reaper: Reaper) -> None:
        self.port = free_port()
        self.log = tmp_path / f"auditor-{name}.log"
        with self.log.open("w") as err:
            self.proc = reaper(subprocess.Popen(
                [CHAINWATCH, "audit", "serve", "--metrics-port", str(self.port),
                 "--session-timeout", SESSION_S, "--json", "--log-level", "INFO"],
                env=env, stdout=subprocess.PIPE, stderr=err, text=True))
        self.url = f"http://127.0.0.1:{self.port}"

    def wait_for(self, text: str, timeout_s: float = TAKEOVER_S) -> None:
        assert wait_for_text(self.log, text, timeout_s, self.proc), (
            f"{self.log.name} never said {text!r}:\n{self.log.read_text()[-3000:]}")

    def says(self, text: str) -> bool:
        return text in self.log.read_text()

    def stop(self) -> dict[str, Any]:
        """SIGTERM; its JSON summary (it must exit 0)."""
        self.proc.send_signal(signal.SIGTERM)
        out, _ = self.proc.communicate(timeout=60)
        assert self.proc.returncode == 0, self.log.read_text()[-3000:]
        return dict(json.loads(out))


@pytest.fixture
def audited(settings: Settings, tmp_path: Path) -> tuple[Settings, dict[str, str]]:
    run = settings.replace(audit__store=str(tmp_path / "shared" / "audit.db"))
    ensure_topics(run)
    return run, cli_env(run) | {"CHAINWATCH_AUDIT_STORE": run.audit.store,
                                "CHAINWATCH_METRICS_HOST": "127.0.0.1"}


def _size(store: str) -> int:
    try:
        with AuditReader.open(store) as reader:
            return reader.size
    except Exception:  # not created yet
        return 0


def _wait_for_size(store: str, size: int, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while _size(store) < size:
        assert time.monotonic() < deadline, f"the log has {_size(store)} leaves, not {size}"
        time.sleep(0.1)


def _check_log(env: dict[str, str], store: str, sent: set[str]) -> None:
    """Every alert sent, each once, at indexes 0..n-1; the log verifies."""
    with AuditReader.open(store) as reader:
        ids = Counter(reader.leaf(i).id for i in range(reader.size))
    assert set(ids) == sent, (f"lost {len(sent - set(ids))}, "
                              f"unexpected {len(set(ids) - sent)}")
    assert max(ids.values()) == 1, "an alert was appended twice"
    verify = subprocess.run([CHAINWATCH, "audit", "verify"], env=env, capture_output=True,
                            text=True, timeout=120, check=False)
    assert verify.returncode == 0 and verify.stdout.startswith("OK"), verify.stdout


def test_one_appends_and_the_standby_takes_over_from_a_killed_writer(
        audited: tuple[Settings, dict[str, str]], tmp_path: Path, reaper: Reaper,
        producer_factory: Callable[..., KafkaProducer], figures: Callable[[str], None]) -> None:
    run, env = audited
    first = Auditor(env, tmp_path, "first", reaper)
    first.wait_for("active: appending")
    second = Auditor(env, tmp_path, "second", reaper)
    second.wait_for("standing by")
    sent: set[str] = set()
    sent |= {a.alert_id for a in send_alerts(run, range(200), producer_factory)}
    _wait_for_size(run.audit.store, 200)
    status, body = http_get(second.url + "/readyz")
    assert status == 503 and "standby" in body, body
    status, body = http_get(second.url + "/v1/head")  # the standby serves the file
    assert status == 200 and json.loads(body)["size"] == 200
    assert "chainwatch_audit_active 0.0" in http_get(second.url + "/metrics")[1]
    assert "chainwatch_audit_active 1.0" in http_get(first.url + "/metrics")[1]
    assert http_get(first.url + "/readyz")[0] == 200

    done = threading.Event()

    def flow() -> None:  # batches with re-sends, while the writer dies
        for start in range(200, 3200, 300):
            sent.update(a.alert_id for a in send_alerts(run, range(start - 30, start + 300),
                                                        producer_factory))
            time.sleep(0.15)
        done.set()

    sender = threading.Thread(target=flow, daemon=True)
    sender.start()
    _wait_for_size(run.audit.store, 800)
    killed_at = _size(run.audit.store)
    first.proc.send_signal(signal.SIGKILL)
    first.proc.communicate(timeout=30)
    killed = time.monotonic()
    second.wait_for("active: appending")
    took_over = time.monotonic() - killed
    sender.join(60)
    assert done.is_set()
    _wait_for_size(run.audit.store, len(sent))
    summary = second.stop()
    figures(f"alerts={len(sent)} killed_at={killed_at} takeover_s={took_over:.1f} "
            f"second_appended={summary['appended']}")
    assert summary["terms"] == 1 and summary["tree_size"] == len(sent) == 3200
    # the killed writer appended at least what was there when it was killed, the standby
    # the rest: between them, every alert once
    assert 0 < summary["appended"] <= len(sent) - killed_at
    _check_log(env, run.audit.store, sent)
    assert not tracebacks(first.log, second.log)


def test_a_paused_writer_resumed_after_the_takeover_appends_nothing(
        audited: tuple[Settings, dict[str, str]], tmp_path: Path, reaper: Reaper,
        producer_factory: Callable[..., KafkaProducer], figures: Callable[[str], None]) -> None:
    run, env = audited
    first = Auditor(env, tmp_path, "first", reaper)
    first.wait_for("active: appending")
    second = Auditor(env, tmp_path, "second", reaper)
    second.wait_for("standing by")
    sent = {a.alert_id for a in send_alerts(run, range(300), producer_factory)}
    _wait_for_size(run.audit.store, 300)

    first.proc.send_signal(signal.SIGSTOP)  # a zombie: it still believes it is the writer
    try:
        # the group drops it after its session; the standby takes the lease and, on this one
        # host, waits for the file lock the paused writer holds
        second.wait_for("waiting for the file lock")
        sent |= {a.alert_id for a in send_alerts(run, range(300, 600), producer_factory)}
        time.sleep(1.0)
        assert _size(run.audit.store) == 300  # nobody appends meanwhile
    finally:
        first.proc.send_signal(signal.SIGCONT)
    second.wait_for("active: appending")  # the resumed writer stood down, freeing the lock
    _wait_for_size(run.audit.store, 600)
    first.wait_for("standing by")
    status, body = http_get(first.url + "/readyz")
    assert status == 503 and "standby" in body, body
    resumed, taker = first.stop(), second.stop()
    figures(f"first_appended={resumed['appended']} second_appended={taker['appended']}")
    assert resumed["appended"] == 300  # nothing after it was resumed
    assert taker["appended"] == 300 and taker["tree_size"] == 600
    _check_log(env, run.audit.store, sent)
    assert not tracebacks(first.log, second.log)
