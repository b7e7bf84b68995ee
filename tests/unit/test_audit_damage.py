"""A damaged store never makes verification or checkpoint trust raise: whatever byte is
flipped, the answer is FAILED / UNREADABLE, or "not trusted" with a reason."""

from __future__ import annotations

import logging
import random
from pathlib import Path

import pytest

from pipeline.audit import AuditLog, Signer, VerifyResult, verify_store
from pipeline.audit.trust import CheckpointTrust
from tests.unit.test_audit_verify import make_leaf

SIGNER = Signer.generate()
PAGE = 4096
CHECKPOINT_SHA = f"{4:064x}"  # make_leaf(4) is a checkpoint


@pytest.fixture(scope="module")
def sealed(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = tmp_path_factory.mktemp("sealed") / "audit.db"
    with AuditLog.open(path, SIGNER) as log:
        for start in range(0, 30, 10):
            log.append([make_leaf(i) for i in range(start, start + 10)])
    assert verify_store(path, public_key=SIGNER.public_key).sealed
    return path.read_bytes()


def _flips(size: int) -> list[tuple[int, int]]:
    """(offset, bit): every byte of the SQLite header, a sample of page 1 (the schema, where
    a flip makes SQLite word its error in bytes that are not UTF-8), and a sample beyond."""
    rng = random.Random(9162)
    offsets = [*range(100), *rng.sample(range(100, PAGE), 700),
               *rng.sample(range(PAGE, size), 200)]
    return [(at, rng.randrange(8)) for at in offsets]


def test_a_flipped_byte_never_makes_verification_or_trust_raise(
        sealed: bytes, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    trust = CheckpointTrust(tmp_path / "copy.db", SIGNER.public_key)
    copy = tmp_path / "copy.db"
    outcomes = {"failed": 0, "unreadable": 0, "untrusted": 0}
    caplog.set_level(logging.WARNING, "pipeline.audit.trust")
    for at, bit in _flips(len(sealed)):
        blob = bytearray(sealed)
        blob[at] ^= 1 << bit
        copy.write_bytes(bytes(blob))
        result = verify_store(copy, public_key=SIGNER.public_key)
        assert isinstance(result, VerifyResult)
        assert not result.ok, (at, bit, result)
        assert str(result).startswith(("FAILED", "UNREADABLE")), (at, str(result))
        outcomes["unreadable" if result.unreadable else "failed"] += 1
        if not trust(CHECKPOINT_SHA):
            assert trust.last_reason
            outcomes["untrusted"] += 1
        for leftover in tmp_path.glob("copy.db*"):
            leftover.unlink()
    assert outcomes["failed"] + outcomes["unreadable"] == len(_flips(len(sealed)))
    assert outcomes["untrusted"] > 0 and "is not trusted" in caplog.text


def test_trust_in_a_file_that_is_not_an_audit_log_is_a_logged_no(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(random.Random(3).randbytes(3 * PAGE))
    trust = CheckpointTrust(garbage, SIGNER.public_key)
    with caplog.at_level(logging.WARNING, "pipeline.audit.trust"):
        assert trust(CHECKPOINT_SHA) is False
    assert trust.last_reason and "is not trusted" in caplog.text
