"""``chainwatch audit serve --metrics-port`` answers heads and proofs over HTTP, and a scorer
started with ``--verify-checkpoints --audit-url`` restores only what those proofs vouch for,
checked with the key it pinned: the commands as a user types them, on a real broker."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaProducer

from consumers.scorer import ScorerService
from pipeline.audit import SignedHead, Signer, verify_head
from pipeline.checkpoints import CheckpointStore
from pipeline.settings import Settings
from pipeline.topics import ensure_topics
from tests.conftest import CHAINWATCH, cli_env, free_port, http_get
from tests.helpers import checkpoint_key_file, produce_chain, send_alerts

pytestmark = pytest.mark.integration


@pytest.fixture
def audited(settings: Settings, tmp_path: Path) -> Settings:
    run = settings.replace(audit__store=str(tmp_path / "audit" / "audit.db"))
    ensure_topics(run)
    return run


def _env(run: Settings) -> dict[str, str]:
    return cli_env(run) | {"CHAINWATCH_AUDIT_STORE": run.audit.store,
                           "CHAINWATCH_METRICS_HOST": "127.0.0.1"}


@pytest.fixture
def auditor(audited: Settings, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """``chainwatch audit serve --metrics-port P`` on the run's log: (its base URL, its log)."""
    port = free_port()
    log = tmp_path / "auditor.log"
    with log.open("w") as err:
        proc = subprocess.Popen([CHAINWATCH, "audit", "serve", "--metrics-port", str(port),
                                 "--session-timeout", "2", "--log-level", "INFO"],
                                env=_env(audited), stdout=subprocess.DEVNULL, stderr=err,
                                text=True)
    try:
        yield f"http://127.0.0.1:{port}", log
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)
    assert proc.returncode == 0, log.read_text()
    assert "Traceback" not in log.read_text()


def _wait_for_size(base: str, size: int, timeout_s: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status, body = http_get(base + "/v1/head")
        if status == 200 and json.loads(body)["size"] >= size:
            return dict(json.loads(body))
        time.sleep(0.2)
    raise AssertionError(f"the auditor's head did not reach {size} leaves in {timeout_s:.0f} s "
                         f"(last answer: {http_get(base + '/v1/head')})")


def test_the_auditor_serves_heads_and_proofs_that_verify(
        audited: Settings, auditor: tuple[str, Path], tmp_path: Path,
        producer_factory: Callable[..., KafkaProducer]) -> None:
    base, _ = auditor
    alerts = send_alerts(audited, range(25), producer_factory)
    with CheckpointStore.from_uri(str(tmp_path / "ckpt")) as store:
        ref = store.save("g", "p0000", b"state", {"partition": 0})
    producer = producer_factory()
    producer.send(audited.topics.checkpoints, value=json.dumps(ref.to_record()).encode())
    producer.flush()

    head = SignedHead.from_json(json.dumps(_wait_for_size(base, 26)))
    public_key = Path(audited.audit.store + ".key.pub")
    assert head.size == 26 and verify_head(public_key, head)
    status, body = http_get(base + "/readyz")
    assert status == 200 and "active" in body, body
    assert "chainwatch_audit_active 1.0" in http_get(base + "/metrics")[1]

    status, body = http_get(f"{base}/v1/alerts/{alerts[7].alert_id}/proof")
    assert status == 200
    proof = tmp_path / "proof.json"
    proof.write_text(body)  # what `chainwatch audit check-proof` checks anywhere
    checked = subprocess.run([CHAINWATCH, "audit", "check-proof", str(proof), "--public-key",
                              str(public_key)], capture_output=True, text=True, timeout=60,
                             check=False)
    assert checked.returncode == 0 and checked.stdout.startswith("VALID"), checked.stdout
    status, body = http_get(f"{base}/v1/checkpoints/{ref.sha256}/proof")
    assert status == 200 and json.loads(body)["leaf_id"] == f"checkpoint:{ref.sha256}"

    for path, expected in [(f"/v1/checkpoints/{'0' * 64}/proof", 404),
                           ("/v1/alerts/no-such-alert/proof", 404),
                           ("/v1/checkpoints/xyz/proof", 400),
                           ("/v1/consistency?first=ten", 400)]:
        status, body = http_get(base + path)
        assert status == expected and "error" in json.loads(body), (path, body)
    status, body = http_get(base + "/v1/consistency?first=5")
    assert status == 200 and json.loads(body)["proof"]["new_size"] == 26


def _score(run: Settings, tmp_path: Path, name: str, *extra: str,
           env: dict[str, str]) -> tuple[dict[str, Any], str]:
    """``chainwatch score --until-caught-up --json`` with ``extra``: (its summary, its log)."""
    log = tmp_path / f"score-{name}.log"
    with log.open("w") as err:
        done = subprocess.run([CHAINWATCH, "score", "--until-caught-up", "--json",
                               "--session-timeout", "2", "--log-level", "INFO", *extra],
                              env=cli_env(run) | env, stdout=subprocess.PIPE, stderr=err,
                              text=True, timeout=300, check=False)
    text = log.read_text()
    assert done.returncode == 0, text
    assert "Traceback" not in text
    return json.loads(done.stdout), text


def test_a_scorer_restores_what_the_auditor_proves_and_nothing_else(
        audited: Settings, auditor: tuple[str, Path], tmp_path: Path) -> None:
    produce_chain(audited, 5, range(40))
    keyed = audited.replace(checkpoint_key_file=str(checkpoint_key_file(audited)))  # the CLI's
    first = ScorerService(keyed, session_timeout_ms=2000, heartbeat_interval_ms=500)
    read = first.run(input_finished=lambda: True).consumed
    assert first.tasks is not None and first.tasks.checkpoints_written > 0 and read > 0
    base, _ = auditor
    _wait_for_size(base, first.tasks.checkpoints_written)
    pinned = audited.audit.store + ".key.pub"
    # the scorers cannot read the log's file: only the auditor's answers count
    remote = {"CHAINWATCH_AUDIT_STORE": str(tmp_path / "elsewhere" / "audit.db")}

    summary, _ = _score(audited, tmp_path, "restores", "--verify-checkpoints", "--audit-url",
                        base, env=remote | {"CHAINWATCH_AUDIT_PUBLIC_KEY": pinned})
    assert summary["consumed"] == 0  # every task restored from a checkpoint proven over HTTP

    other_key = Signer.generate().public_hex()  # the auditor's heads are not signed by it
    summary, text = _score(audited, tmp_path, "impostor", "--verify-checkpoints",
                           "--audit-url", base,
                           env=remote | {"CHAINWATCH_AUDIT_PUBLIC_KEY": other_key})
    assert summary["consumed"] == read  # nothing restored: every partition read again
    assert "not signed by the configured public key" in text

    nobody = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    summary, text = _score(audited, tmp_path, "unreachable", "--verify-checkpoints",
                           "--audit-url", nobody,
                           env=remote | {"CHAINWATCH_AUDIT_PUBLIC_KEY": pinned})
    assert summary["consumed"] == read and "did not answer" in text
    assert time.monotonic() - started < 120


def test_audit_url_without_verify_checkpoints_is_a_one_line_error(audited: Settings) -> None:
    done = subprocess.run([CHAINWATCH, "score", "--audit-url", "http://127.0.0.1:9"],
                          env=cli_env(audited), capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == 2 and "add --verify-checkpoints" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    done = subprocess.run([CHAINWATCH, "score", "--verify-checkpoints", "--audit-url",
                           "ftp://auditor"], env=cli_env(audited), capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 2 and "http(s)://HOST" in done.stderr
