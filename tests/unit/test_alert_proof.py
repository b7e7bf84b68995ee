"""``chainwatch alerts show``'s audit check: verified, not in the log, no log, or failed."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from pipeline.alert_proof import check_alert
from pipeline.audit import AuditLog, Leaf, Signer
from tests.helpers import make_alert


def _log(tmp_path: Path, count: int) -> tuple[Path, Signer]:
    path = tmp_path / "audit.db"
    signer = Signer.generate()
    with AuditLog.open(path, signer) as log:
        log.append([Leaf.from_alert(make_alert(i)) for i in range(count)])
    return path, signer


def test_an_alert_in_the_log_is_verified(tmp_path: Path) -> None:
    path, signer = _log(tmp_path, 5)
    a = make_alert(3)
    check = check_alert(a.to_json(), a.alert_id, path, signer.public_hex())
    assert check.ok and (check.index, check.size) == (3, 5), check.message
    assert "the stored alert's bytes are that leaf's" in check.message


def test_altered_bytes_another_key_and_absence_are_told_apart(tmp_path: Path) -> None:
    path, signer = _log(tmp_path, 5)
    a = make_alert(3)
    altered = dataclasses.replace(a, score=0.1)  # same id, other bytes: the store was edited
    check = check_alert(altered.to_json(), a.alert_id, path, signer.public_hex())
    assert check.outcome == "failed" and "other bytes" in check.message
    other_key = Signer.generate().public_hex()
    check = check_alert(a.to_json(), a.alert_id, path, other_key)
    assert check.outcome == "failed" and "not signed by the public key" in check.message
    missing = make_alert(9)
    check = check_alert(missing.to_json(), missing.alert_id, path, signer.public_hex())
    assert check.outcome == "not_in_log" and "5 leaves" in check.message
    check = check_alert(a.to_json(), a.alert_id, tmp_path / "none.db", signer.public_hex())
    assert check.outcome == "no_log"
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"x" * 4096)
    check = check_alert(a.to_json(), a.alert_id, junk, signer.public_hex())
    assert check.outcome == "failed" and "cannot be read" in check.message
