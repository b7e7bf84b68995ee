"""The audit log's JSON API over real HTTP (a HealthServer on a loopback port, no broker), and
the scorer's remote check against it: what the API answers verifies with the log's key
alone; bad input is a JSON 400 or 404; and a remote check trusts nothing the pinned key did
not sign, and never raises, whatever the server does."""

from __future__ import annotations

import base64
import json
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from pipeline.alerts import Alert
from pipeline.audit import (
    AuditKeyError,
    AuditLog,
    ConsistencyProof,
    InclusionProof,
    Leaf,
    SignedHead,
    Signer,
    verify_consistency,
    verify_head,
    verify_inclusion,
)
from pipeline.audit.api import decode_leaf, routes
from pipeline.audit.trust import CheckpointTrust, RemoteCheckpointTrust
from pipeline.checkpoints import CheckpointRef
from pipeline.health import HealthServer, Reply, Route, ServiceHealth
from pipeline.settings import Settings

SIGNER = Signer.generate()
OTHER = Signer.generate()
BATCHES = (3, 4, 2)  # heads at sizes 3, 7 and 9


def sha(i: int) -> str:
    return f"{i + 1:064x}"


def checkpoint(i: int) -> Leaf:
    return Leaf.from_checkpoint(CheckpointRef(
        uri=f"file:///c/g/p0000/{i + 1:012d}-{sha(i)}.ckpt", group="g", task="p0000",
        seq=i + 1, sha256=sha(i), size=10, created_at=1_700_000_000_000 + i,
        meta={"offsets": {"chain.dex": i}}))


def alert(i: int) -> Leaf:
    return Leaf.from_alert(Alert.build(
        type="rug_pull", severity="high", score=0.9, subject=f"0x{i:040x}",
        detector="liquidity_drain", model_version="1", evidence={"drop": 0.95},
        source={"topic": "chain.dex", "partition": 0, "offset": i, "item_ids": [f"log_{i}"]},
        event_time=i, detected_at=i))


@pytest.fixture
def store(tmp_path: Path) -> Path:
    """A log of 9 leaves in 3 batches, alerts and checkpoints alternating."""
    path = tmp_path / "audit.db"
    n = 0
    with AuditLog.open(path, SIGNER) as log:
        for size in BATCHES:
            log.append([alert(i) if i % 2 else checkpoint(i) for i in range(n, n + size)])
            n += size
    return path


def serve(api_routes: Mapping[str, Route]) -> HealthServer:
    return HealthServer(ServiceHealth(), port=0, registry=CollectorRegistry(),
                        routes=api_routes).start()


@pytest.fixture
def server(store: Path) -> Iterator[HealthServer]:
    server = serve(routes(store))
    yield server
    server.close()


def get(url: str) -> tuple[int, str, Any]:
    """(status, content type, parsed JSON body) of a GET; error statuses too."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.headers["Content-Type"], json.loads(response.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.headers["Content-Type"], json.loads(exc.read())


def test_the_head_is_the_newest_signed_head(server: HealthServer, store: Path) -> None:
    status, kind, body = get(server.url + "/v1/head")
    head = SignedHead.from_json(json.dumps(body))
    assert (status, kind, head.size) == (200, "application/json", 9)
    assert verify_head(SIGNER.public_key, head)


@pytest.mark.parametrize("i", [0, 1, 4, 8])
def test_a_proof_verifies_with_the_key_alone(server: HealthServer, i: int) -> None:
    leaf = checkpoint(i) if i % 2 == 0 else alert(i)
    path = (f"/v1/checkpoints/{sha(i).upper()}/proof" if i % 2 == 0 else
            f"/v1/alerts/{leaf.id}/proof")
    status, _, doc = get(server.url + path)
    assert status == 200
    head = SignedHead.from_json(json.dumps(doc["head"]))
    proof = InclusionProof.from_json(json.dumps(doc["proof"]))
    assert doc["leaf_id"] == leaf.id and doc["index"] == proof.index == i
    assert decode_leaf(doc) == leaf.data == doc["leaf"].encode()  # base64 and text agree
    assert verify_inclusion(SIGNER.public_key, head, leaf, proof)
    assert not verify_inclusion(OTHER.public_key, head, leaf, proof)


@pytest.mark.parametrize(("path", "status", "says"), [
    ("/v1/checkpoints/" + "ab" * 32 + "/proof", 404, "not in the audit log"),
    ("/v1/alerts/0123456789abcdef/proof", 404, "not in the audit log"),
    ("/v1/checkpoints/not-hex/proof", 400, "not a SHA-256 digest"),
    ("/v1/checkpoints/" + "ab" * 31 + "/proof", 400, "not a SHA-256 digest"),
    ("/v1/checkpoints/" + "zz" * 32 + "/proof", 400, "not a SHA-256 digest"),
    ("/v1/alerts/two%20words/proof", 400, "not an alert id"),
    ("/v1/alerts/checkpoint:" + "ab" * 32 + "/proof", 400, "not an alert id"),
    ("/v1/alerts/" + "a" * 201 + "/proof", 400, "not an alert id"),
    ("/v1/consistency", 400, "?first=N"),
    ("/v1/consistency?first=abc", 400, "not a tree size"),
    ("/v1/consistency?first=-1", 400, "not a tree size"),
    ("/v1/consistency?first=7&second=3", 400, "larger than second"),
    ("/v1/consistency?first=3&second=99", 404, "fewer than asked for"),
    ("/v1/nope", 404, "no such endpoint"),
    ("/v1/head/extra", 404, "no such endpoint"),
])
def test_bad_input_is_a_json_error(server: HealthServer, path: str, status: int,
                                   says: str) -> None:
    got, kind, body = get(server.url + path)
    assert (got, kind) == (status, "application/json")
    assert set(body) == {"error"} and says in body["error"], body


def test_consistency_proves_the_log_only_grew(server: HealthServer) -> None:
    status, _, doc = get(server.url + "/v1/consistency?first=3&second=7")
    assert status == 200
    old = SignedHead.from_json(json.dumps(doc["old_head"]))
    new = SignedHead.from_json(json.dumps(doc["new_head"]))
    proof = ConsistencyProof.from_json(json.dumps(doc["proof"]))
    assert verify_consistency(SIGNER.public_key, old, new, proof)
    status, _, doc = get(server.url + "/v1/consistency?first=5")  # to the newest; no head at 5
    assert status == 200 and doc["old_head"] is None and doc["proof"]["new_size"] == 9


def test_no_log_and_a_damaged_log_are_503_without_a_traceback(tmp_path: Path) -> None:
    missing = serve(routes(tmp_path / "nothing.db"))
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not a database " * 300)
    damaged = serve(routes(junk))
    try:
        status, _, body = get(missing.url + "/v1/head")
        assert status == 503 and "does not exist yet" in body["error"]
        status, _, body = get(damaged.url + "/v1/checkpoints/" + sha(0) + "/proof")
        assert status == 503 and "cannot be read" in body["error"]
        assert "Traceback" not in body["error"]
    finally:
        missing.close()
        damaged.close()


def test_an_empty_log_has_no_head(tmp_path: Path) -> None:
    AuditLog.open(tmp_path / "audit.db", SIGNER).close()
    server = serve(routes(tmp_path / "audit.db"))
    try:
        assert get(server.url + "/v1/head")[0] == 404
    finally:
        server.close()


# -- the scorer's remote check -----------------------------------------------------------------


def test_a_logged_checkpoint_is_trusted_over_http(server: HealthServer) -> None:
    trust = RemoteCheckpointTrust(server.url, SIGNER.public_key)
    assert trust(sha(0)) and trust.last_reason == ""
    assert trust(sha(8))
    assert not trust("ab" * 32)
    assert "not in the audit log (yet)" in trust.last_reason


def test_a_head_signed_by_another_key_is_not_trusted(server: HealthServer) -> None:
    trust = RemoteCheckpointTrust(server.url, OTHER.public_key)  # pinned: not the log's key
    assert not trust(sha(0))
    assert "not signed by the configured public key" in trust.last_reason


def _forging(store: Path, change: Any) -> HealthServer:
    """A server answering the real API's proof with ``change(doc)`` applied."""
    real = routes(store)["/v1/"]

    def api(path: str, query: Mapping[str, str]) -> Reply:
        reply = real(path, query)
        doc = json.loads(reply.body)
        return Reply(reply.status, change(doc)) if reply.status == 200 else reply

    return serve({"/v1/": api})


def _swap_path(doc: dict[str, Any]) -> bytes:
    doc["proof"]["path"] = list(reversed(doc["proof"]["path"]))
    return json.dumps(doc).encode()


def _other_leaf(doc: dict[str, Any]) -> bytes:
    doc["leaf_base64"] = base64.b64encode(checkpoint(2).data).decode()
    return json.dumps(doc).encode()


def _resigned(doc: dict[str, Any]) -> bytes:
    head = SignedHead.from_json(json.dumps(doc["head"]))
    doc["head"] = json.loads(OTHER.sign_head(head.size, head.root, head.prev,
                                             head.timestamp_ms).to_json())
    return json.dumps(doc).encode()


@pytest.mark.parametrize(("change", "says"), [
    (_swap_path, "does not verify against the signed head"),
    (_other_leaf, "sent the leaf of"),
    (_resigned, "not signed by the configured public key"),
    (lambda doc: b"<html>not json</html>", "not an inclusion proof"),
    (lambda doc: b"[1, 2]", "not an inclusion proof"),
    (lambda doc: json.dumps({**doc, "head": {"size": 1}}).encode(), "not an inclusion proof"),
    (lambda doc: json.dumps({**doc, "index": 5}).encode(), "not an inclusion proof"),
    (lambda doc: json.dumps({**doc, "leaf_base64": "%%%"}).encode(), "not an inclusion proof"),
])
def test_a_forged_or_garbled_answer_is_not_trusted(store: Path, change: Any,
                                                   says: str) -> None:
    server = _forging(store, change)
    try:
        trust = RemoteCheckpointTrust(server.url, SIGNER.public_key)
        assert not trust(sha(0))
        assert says in trust.last_reason, trust.last_reason
    finally:
        server.close()


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_an_unreachable_auditor_is_asked_once_per_retry_period() -> None:
    clock = Clock()
    trust = RemoteCheckpointTrust(f"http://user:secret@127.0.0.1:{_free_port()}/base",
                                  SIGNER.public_key, timeout_s=2.0, clock=clock)
    assert not trust(sha(0))
    assert "did not answer" in trust.last_reason and "secret" not in trust.last_reason
    first = trust.last_reason
    assert not trust(sha(1)) and "not asked again" in trust.last_reason
    assert trust.last_reason.startswith(first)
    clock.now += 10  # the retry period is over: asked again
    assert not trust(sha(1)) and "not asked again" not in trust.last_reason


def test_a_silent_auditor_is_not_trusted_within_the_timeout() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        accepted: list[socket.socket] = []
        thread = threading.Thread(target=lambda: accepted.append(listener.accept()[0]),
                                  daemon=True)
        thread.start()
        port = listener.getsockname()[1]
        trust = RemoteCheckpointTrust(f"http://127.0.0.1:{port}", SIGNER.public_key,
                                      timeout_s=0.5)
        started = time.monotonic()
        assert not trust(sha(0))
        assert time.monotonic() - started < 3
        assert "did not answer within 0.5 s" in trust.last_reason, trust.last_reason
        for conn in accepted:
            conn.close()


def test_a_failing_auditor_is_not_trusted_and_not_asked_again_at_once(store: Path) -> None:
    server = serve({"/v1/": lambda path, query: Reply.error(503, "the audit log is busy")})
    try:
        clock = Clock()
        trust = RemoteCheckpointTrust(server.url, SIGNER.public_key, clock=clock)
        assert not trust(sha(0))
        assert "HTTP 503: the audit log is busy" in trust.last_reason
        assert not trust(sha(0)) and "not asked again" in trust.last_reason
    finally:
        server.close()


def test_the_settings_choose_the_auditor_over_the_file(tmp_path: Path) -> None:
    settings = Settings.load(env={}).replace(audit__store=str(tmp_path / "audit.db"),
                                             audit__url="http://auditor:9108")
    with pytest.raises(AuditKeyError, match=r"pin the log's key with audit\.public_key"):
        CheckpointTrust.from_settings(settings)
    pinned = settings.replace(audit__public_key=SIGNER.public_hex())
    trust = CheckpointTrust.from_settings(pinned)
    assert isinstance(trust, RemoteCheckpointTrust) and trust.url == "http://auditor:9108"
    local = CheckpointTrust.from_settings(pinned.replace(audit__url=""))
    assert isinstance(local, CheckpointTrust)
