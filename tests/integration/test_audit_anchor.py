"""Audit heads anchored on a real chain (anvil): an anchored head verifies; a log rewritten
after anchoring, even validly signed with the auditor's own key, fails ``verify --anchors``.
The commands are run as a user types them."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from pipeline.audit import AuditLog, Leaf, Signer
from tests.anvil import Anvil, anvil_fixture
from tests.conftest import CHAINWATCH
from tests.helpers import make_alert

__all__ = ["anvil_fixture"]
pytestmark = pytest.mark.integration


def _log(path: Path, signer: Signer, alerts: range) -> None:
    with AuditLog.open(path, signer) as log:
        log.append([Leaf.from_alert(make_alert(i)) for i in alerts])


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.pop("CHAINWATCH_RPC_URL", None)
    return subprocess.run([CHAINWATCH, "audit", *args], capture_output=True, text=True,
                          timeout=120, env=env, check=False)


def test_an_anchored_head_verifies_and_a_rewritten_log_does_not(anvil: Anvil,
                                                                 tmp_path: Path) -> None:
    signer = Signer.generate()
    store = tmp_path / "audit.db"
    _log(store, signer, range(5))
    key = ["--public-key", signer.public_hex()]
    done = _run("anchor", "--store", str(store), "--rpc-url", anvil.url, "--json")
    assert done.returncode == 0, done.stderr
    anchor = json.loads(done.stdout)
    assert anchor["size"] == 5 and anchor["chain_id"] == 31337
    tx = anvil.rpc("eth_getTransactionByHash", anchor["tx_hash"])
    assert tx["input"] == "0x" + b"CWA1".hex() + anchor["head_hash"]  # the head, on chain
    assert tx["from"].lower() == tx["to"].lower() == anvil.accounts[0].lower()
    anvil.mine(3)

    ok = _run("verify", "--store", str(store), *key, "--anchors", "--rpc-url", anvil.url)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "anchor OK: size 5" in ok.stdout and "4 blocks deep" in ok.stdout

    _log(store, signer, range(5, 8))  # the log grows: the old anchor still holds
    grown = _run("verify", "--store", str(store), *key, "--anchors", "--rpc-url", anvil.url)
    assert grown.returncode == 0, grown.stdout + grown.stderr

    forged = tmp_path / "forged.db"  # the same key, other alerts: a rewritten history
    _log(forged, signer, range(100, 108))
    shutil.copy(forged, store)
    bad = _run("verify", "--store", str(store), *key, "--anchors", "--rpc-url", anvil.url)
    assert bad.returncode == 1
    assert "anchor FAILED: size 5" in bad.stdout and "changed after anchoring" in bad.stdout
    assert bad.stdout.startswith("OK")  # the forgery is a valid log: only the anchor tells


def test_an_anchor_reorged_away_fails(anvil: Anvil, tmp_path: Path) -> None:
    signer = Signer.generate()
    store = tmp_path / "audit.db"
    _log(store, signer, range(3))
    done = _run("anchor", "--store", str(store), "--rpc-url", anvil.url, "--json")
    assert done.returncode == 0, done.stderr
    anvil.reorg(1)  # the anchor's block is orphaned, its transaction dropped
    bad = _run("verify", "--store", str(store), "--public-key", signer.public_hex(),
               "--anchors", "--rpc-url", anvil.url)
    assert bad.returncode == 1 and "anchor FAILED" in bad.stdout, bad.stdout + bad.stderr


def test_without_a_node_or_anchors_it_says_what_to_do(tmp_path: Path) -> None:
    signer = Signer.generate()
    store = tmp_path / "audit.db"
    _log(store, signer, range(2))
    missing = _run("anchor", "--store", str(store))
    assert missing.returncode == 2 and "--rpc-url" in missing.stderr
    none = _run("verify", "--store", str(store), "--public-key", signer.public_hex(),
                "--anchors", "--rpc-url", "http://127.0.0.1:9")
    assert none.returncode != 0 and "no anchors" in none.stderr
    assert len(none.stderr.strip().splitlines()) == 1
