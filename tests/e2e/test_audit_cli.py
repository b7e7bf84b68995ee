"""``chainwatch audit`` as a user types it, on the log a real demo run leaves behind."""

from __future__ import annotations

import json
import random
import shutil
import sqlite3
import subprocess
import time
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from pipeline.audit import AuditLog, AuditReader, Signer
from tests.conftest import CHAINWATCH

pytestmark = pytest.mark.e2e


def _cw(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CHAINWATCH, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300, check=False)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    cwd = tmp_path_factory.mktemp("demo")
    done = _cw("demo", "--json", "--quiet", "--blocks", "300", "--seed", "77", cwd=cwd)
    assert done.returncode == 0, done.stderr
    summary: dict[str, Any] = json.loads(done.stdout)
    summary["cwd"] = cwd
    return summary


def test_demo_reports_a_verified_log_and_audit_verify_agrees(demo: dict[str, Any]) -> None:
    audit = demo["audit"]
    alerts = sum(demo["alerts_by_type"].values())
    assert audit["verified"] is True
    assert audit["tree_size"] > alerts > 0  # every alert, and the scorer's checkpoints
    done = _cw("audit", "verify", "--store", audit["store"], cwd=demo["cwd"])
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"OK: {audit['tree_size']} leaves")
    assert audit["root"] in done.stdout


def test_one_changed_byte_in_a_copy_fails_verification(demo: dict[str, Any]) -> None:
    cwd, audit = demo["cwd"], demo["audit"]
    original = (cwd / audit["store"]).read_bytes()
    failures = tried = 0
    for i, offset in enumerate(range(100, len(original), max(len(original) // 12, 1))):
        copy = cwd / f"copy-{i}.db"
        data = bytearray(original)
        data[offset] ^= 0x01
        copy.write_bytes(bytes(data))
        done = _cw("audit", "verify", "--store", str(copy), "--public-key", audit["public_key"],
                   cwd=cwd)
        assert not done.stdout.startswith("OK"), f"byte {offset} changed, still {done.stdout}"
        failures += done.returncode != 0
        tried += 1
        assert done.stdout.startswith(("FAILED", "UNREADABLE")) or done.returncode == 2, \
            done.stdout + done.stderr
    assert failures == tried >= 10


def test_a_proof_from_audit_prove_checks_offline_with_only_the_public_key(
        demo: dict[str, Any], tmp_path: Path) -> None:
    cwd, audit = demo["cwd"], demo["audit"]
    with AuditReader.open(cwd / audit["store"]) as reader:
        alert_id = next(leaf.id for leaf in map(reader.leaf, range(reader.size))
                        if leaf.kind == "alert")
    proved = _cw("audit", "prove", alert_id, "--store", audit["store"], cwd=cwd)
    assert proved.returncode == 0, proved.stderr
    offline = tmp_path / "elsewhere"  # no log here: only the proof and the public key
    offline.mkdir()
    (offline / "proof.json").write_text(proved.stdout)
    shutil.copy(cwd / audit["public_key"], offline / "log.pub")

    ok = _cw("audit", "check-proof", "proof.json", "--public-key", "log.pub", cwd=offline)
    assert ok.returncode == 0 and ok.stdout.startswith(f"VALID: {alert_id}"), ok.stdout

    (offline / "other.pub").write_text(Signer.generate().public_pem())
    wrong_key = _cw("audit", "check-proof", "proof.json", "--public-key", "other.pub",
                    cwd=offline)
    assert wrong_key.returncode == 1 and wrong_key.stdout.startswith("INVALID")

    doc = json.loads(proved.stdout)
    doc["leaf"] = doc["leaf"].replace('"severity":"', '"severity":"x', 1)
    (offline / "edited.json").write_text(json.dumps(doc))
    edited = _cw("audit", "check-proof", "edited.json", "--public-key", "log.pub", cwd=offline)
    assert edited.returncode == 1 and edited.stdout.startswith("INVALID")


def test_head_consistency_and_errors_as_a_user_sees_them(demo: dict[str, Any]) -> None:
    cwd, audit = demo["cwd"], demo["audit"]
    head = _cw("audit", "head", "--store", audit["store"], cwd=cwd)
    assert json.loads(head.stdout)["size"] == audit["tree_size"]
    consistency = _cw("audit", "consistency", "1", "--store", audit["store"], cwd=cwd)
    proof = json.loads(consistency.stdout)["proof"]
    assert (proof["old_size"], proof["new_size"]) == (1, audit["tree_size"])

    unknown = _cw("audit", "prove", "0" * 32, "--store", audit["store"], cwd=cwd)
    assert unknown.returncode == 2 and "is not in the audit log" in unknown.stderr
    assert len(unknown.stderr.strip().splitlines()) == 1
    missing = _cw("audit", "verify", "--store", "nowhere.db", "--public-key",
                  audit["public_key"], cwd=cwd)
    assert missing.returncode == 1 and missing.stdout.startswith("UNREADABLE")
    bad = _cw("audit", "consistency", "-3", cwd=cwd)
    assert bad.returncode == 2 and "(see 'chainwatch audit consistency --help')" in bad.stderr


# -- tamper evidence as a user sees it (a small log made here, no demo) ----------------------

@pytest.fixture
def small(tmp_path: Path) -> tuple[Path, Path]:
    """A sealed log of 20 leaves in two batches, and the seal head its auditor published."""
    from tests.unit.test_audit_verify import make_leaf

    with AuditLog.open(tmp_path / "audit.db") as log:
        log.append([make_leaf(i) for i in range(10)])
        log.append([make_leaf(i) for i in range(10, 20)])
    assert log.seal_head is not None
    (tmp_path / "head.json").write_bytes(log.seal_head.to_json())
    return tmp_path, tmp_path / "head.json"


def _sql(path: Path, *statements: str) -> None:
    with closing(sqlite3.connect(path)) as conn:
        for statement in statements:
            conn.execute(statement)
        conn.commit()


def test_verify_against_a_kept_head_catches_a_rollback_and_a_removed_seal(
        small: tuple[Path, Path]) -> None:
    cwd, head = small
    ok = _cw("audit", "verify", "--store", "audit.db", "--head", str(head), cwd=cwd)
    assert ok.returncode == 0 and "consistent with the external head of 20 leaves" in ok.stdout
    alone = _cw("audit", "verify", "--store", "audit.db", cwd=cwd)
    assert alone.returncode == 0 and "no external head to check against" in alone.stdout

    _sql(cwd / "audit.db", "DROP TABLE seal")
    removed = _cw("audit", "verify", "--store", "audit.db", "--head", str(head), cwd=cwd)
    assert removed.returncode == 1 and removed.stdout.startswith("FAILED")
    assert "the file seal was removed" in removed.stdout
    _sql(cwd / "audit.db", "DELETE FROM leaves WHERE idx >= 10",
         "DELETE FROM id_keys WHERE idx >= 10", "DELETE FROM nodes WHERE ((idx + 1) << level) > 10",
         "DELETE FROM heads WHERE size > 10")
    rolled = _cw("audit", "verify", "--store", "audit.db", "--head", head.read_text(), cwd=cwd)
    assert rolled.returncode == 1
    assert "rollback: store has 10 leaves, head signed for 20" in rolled.stdout
    assert len(rolled.stdout.strip().splitlines()) == 1 and not rolled.stderr


def test_verify_says_so_in_a_few_seconds_when_no_broker_answers(
        small: tuple[Path, Path]) -> None:
    cwd, _ = small
    started = time.monotonic()
    done = _cw("audit", "verify", "--store", "audit.db", "--bootstrap", "127.0.0.1:9", cwd=cwd)
    assert time.monotonic() - started < 20
    assert done.returncode == 0 and "no external head to check against" in done.stdout
    assert "no head read from chainwatch.audit" in done.stderr


def test_a_damaged_or_foreign_store_is_one_line_never_a_traceback(
        small: tuple[Path, Path]) -> None:
    cwd, _ = small
    (cwd / "garbage.bin").write_bytes(random.Random(4).randbytes(5000))
    garbage = _cw("audit", "verify", "--store", "garbage.bin", cwd=cwd)
    assert garbage.returncode == 2 and garbage.stdout == ""
    assert "garbage.bin is not a chainwatch audit store" in garbage.stderr
    assert len(garbage.stderr.strip().splitlines()) == 1

    original = (cwd / "audit.db").read_bytes()
    rng = random.Random(343)
    for i, at in enumerate(rng.sample(range(100, 4096), 60)):  # page 1: the schema
        blob = bytearray(original)
        blob[at] ^= 1 << rng.randrange(8)
        (cwd / f"flip-{i}.db").write_bytes(bytes(blob))
        done = _cw("audit", "verify", "--store", f"flip-{i}.db", "--public-key",
                   "audit.db.key.pub", cwd=cwd)
        assert "Traceback" not in done.stderr, (at, done.stderr)
        assert done.returncode == 1 and done.stdout.startswith(("FAILED", "UNREADABLE")), \
            (at, done.stdout, done.stderr)
        assert len(done.stdout.strip().splitlines()) == 1


def test_keygen_makes_the_key_once_and_writes_its_public_half_apart(tmp_path: Path) -> None:
    """`audit keygen`, as the compose stack's one-shot runs it: the private key (mode 0600) on
    one volume, the public key where scorers pin it; run again, nothing changes."""
    key, public = tmp_path / "keys" / "audit.key", tmp_path / "pub" / "audit.pub"
    first = _cw("audit", "keygen", "--key", str(key), "--public-out", str(public), cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    private_bytes = key.read_bytes()
    assert key.stat().st_mode & 0o777 == 0o600
    signer = Signer.load(key)
    assert first.stdout.strip() == signer.public_hex()
    assert public.read_text() == signer.public_pem()
    again = _cw("audit", "keygen", "--key", str(key), "--public-out", str(public), cwd=tmp_path)
    assert again.stdout == first.stdout and key.read_bytes() == private_bytes
    missing = _cw("audit", "keygen", cwd=tmp_path)
    assert missing.returncode == 2 and "--key" in missing.stderr
