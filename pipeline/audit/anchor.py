"""Anchors: the audit log's signed heads published on an Ethereum chain, and their check.

``chainwatch audit anchor --rpc-url URL`` sends one transaction whose calldata is
``ANCHOR_PREFIX`` (the 4 bytes ``CWA1``) followed by the SHA-256 of the newest signed head
(:meth:`~pipeline.audit.signing.SignedHead.hash`, the hash the next head chains to), from an
account to itself with no value: no contract, nothing to deploy, and any block explorer
shows it. It waits for the receipt and appends the anchor (chain id, transaction, block
number and hash, and the head's size, root and hash) as one JSON line to the anchors file
beside the store (``<store>.anchors.jsonl``).

The account is the node's own (``eth_sendTransaction``: a dev node such as anvil, or a node
holding the key) unless ``audit.anchor_key`` holds a private key, in which case the
transaction is signed here (eth-account) and sent raw.

``chainwatch audit verify --anchors --rpc-url URL`` then checks every anchor: the
transaction is on the chain (its receipt succeeded) with exactly that calldata, in the
recorded block, which is still the chain's block at that height (so not reorged away), now
``depth`` blocks deep; and the log still extends that head: its head at the anchored size,
if it keeps one, is the anchored one, and a consistency proof (RFC 9162) leads from the
anchored root to the log's newest. A log rewritten after anchoring, even one re-signed with the
auditor's key, fails here, which is what anchoring is for.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from eth_account import Account

from pipeline.audit.errors import AuditError
from pipeline.audit.proofs import verify_consistency_path
from pipeline.audit.reader import AuditReader
from pipeline.jsonrpc import Rpc, rpc_client, shown_url

ANCHOR_PREFIX = b"CWA1"
RECEIPT_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class Anchor:
    chain_id: int
    tx_hash: str
    sender: str
    block_number: int
    block_hash: str
    size: int
    root: str  # hex
    head_hash: str  # hex

    @property
    def calldata(self) -> str:
        return "0x" + (ANCHOR_PREFIX + bytes.fromhex(self.head_hash)).hex()


def anchors_path(store: str | Path) -> Path:
    return Path(f"{store}.anchors.jsonl")


def load_anchors(store: str | Path) -> list[Anchor]:
    path = anchors_path(store)
    if not path.exists():
        return []
    try:
        return [Anchor(**json.loads(line)) for line in path.read_text().splitlines() if line]
    except (ValueError, TypeError) as exc:
        raise AuditError(f"anchors file {path} is unreadable ({exc})") from None


def anchor_head(store: str | Path, url: str, *, sender: str | None = None,
                private_key: str = "") -> Anchor:
    """Publish the newest signed head of the log at ``store`` on the chain at ``url``."""
    with AuditReader.open(store) as reader:
        head = reader.head
    if head is None:
        raise AuditError(f"the log {store} has no signed head yet: nothing to anchor")
    rpc = rpc_client(url)
    try:
        chain_id = int(rpc.call("eth_chainId"), 16)
        data = "0x" + (ANCHOR_PREFIX + head.hash()).hex()
        if private_key:
            tx_hash, sender = _send_signed(rpc, chain_id, data, private_key)
        else:
            if sender is None:
                accounts = rpc.call("eth_accounts") or []
                if not accounts:
                    raise AuditError(f"the node at {shown_url(url)} holds no account: give "
                                     "--from, or set audit.anchor_key (CHAINWATCH_AUDIT_"
                                     "ANCHOR_KEY) to sign here")
                sender = accounts[0]
            tx_hash = rpc.call("eth_sendTransaction", {"from": sender, "to": sender,
                                                      "value": "0x0", "data": data})
        receipt = _receipt(rpc, tx_hash)
    finally:
        rpc.transport.close()
    if int(receipt["status"], 16) != 1:
        raise AuditError(f"the anchor transaction {tx_hash} failed on chain")
    anchor = Anchor(chain_id=chain_id, tx_hash=tx_hash, sender=str(sender).lower(),
                    block_number=int(receipt["blockNumber"], 16),
                    block_hash=receipt["blockHash"], size=head.size, root=head.root.hex(),
                    head_hash=head.hash().hex())
    with anchors_path(store).open("a", encoding="utf-8") as f:
        f.write(json.dumps(asdict(anchor)) + "\n")
    return anchor


def _send_signed(rpc: Rpc, chain_id: int, data: str, private_key: str) -> tuple[str, str]:
    account = Account.from_key(private_key)
    nonce = int(rpc.call("eth_getTransactionCount", account.address, "pending"), 16)
    gas_price = int(rpc.call("eth_gasPrice"), 16)
    tx = {"to": account.address, "value": 0, "data": data, "nonce": nonce,
          "gas": 21_000 + 16 * (len(data) // 2), "gasPrice": gas_price, "chainId": chain_id}
    signed = account.sign_transaction(tx)
    raw = "0x" + bytes(signed.raw_transaction).hex()
    return str(rpc.call("eth_sendRawTransaction", raw)), account.address


def _receipt(rpc: Rpc, tx_hash: str) -> dict[str, Any]:
    deadline = time.monotonic() + RECEIPT_TIMEOUT_S
    while time.monotonic() < deadline:
        receipt = rpc.call("eth_getTransactionReceipt", tx_hash)
        if receipt is not None:
            return dict(receipt)
        time.sleep(0.5)
    raise AuditError(f"the anchor transaction {tx_hash} was not mined within "
                     f"{RECEIPT_TIMEOUT_S:.0f} s; run `chainwatch audit verify --anchors` later")


@dataclass
class AnchorCheck:
    anchor: Anchor
    ok: bool
    depth: int | None
    problem: str = ""

    def __str__(self) -> str:
        where = f"size {self.anchor.size} in block {self.anchor.block_number}"
        if self.ok:
            return f"anchor OK: {where}, {self.depth} blocks deep, tx {self.anchor.tx_hash}"
        return f"anchor FAILED: {where}: {self.problem}"


def verify_anchors(store: str | Path, url: str) -> list[AnchorCheck]:
    """Check every anchor of the log at ``store`` against the chain at ``url`` and the log."""
    anchors = load_anchors(store)
    if not anchors:
        raise AuditError(f"no anchors for {store} (none in {anchors_path(store)}); publish "
                         "one with `chainwatch audit anchor --rpc-url URL`")
    rpc = rpc_client(url)
    try:
        chain_id = int(rpc.call("eth_chainId"), 16)
        tip = int(rpc.call("eth_blockNumber"), 16)
        with AuditReader.open(store) as reader:
            return [_check(rpc, reader, a, chain_id, tip) for a in anchors]
    finally:
        rpc.transport.close()


def _check(rpc: Rpc, reader: AuditReader, a: Anchor, chain_id: int, tip: int) -> AnchorCheck:
    def failed(problem: str) -> AnchorCheck:
        return AnchorCheck(a, False, None, problem)

    if a.chain_id != chain_id:
        return failed(f"anchored on chain {a.chain_id}, the node serves chain {chain_id}")
    tx = rpc.call("eth_getTransactionByHash", a.tx_hash)
    receipt = rpc.call("eth_getTransactionReceipt", a.tx_hash)
    if tx is None or receipt is None:
        return failed("the transaction is not on the chain (reorged away, or another chain)")
    if str(tx.get("input", "")).lower() != a.calldata:
        return failed("the transaction's calldata is not this head's hash")
    if int(receipt["status"], 16) != 1 or receipt["blockHash"] != a.block_hash:
        return failed(f"the transaction is in block {receipt['blockHash']}, not the recorded "
                      f"{a.block_hash}")
    block = rpc.call("eth_getBlockByNumber", hex(a.block_number), False)
    if block is None or block["hash"] != a.block_hash:
        return failed(f"block {a.block_number} is no longer the recorded one (a reorg)")
    head = reader.head_at(a.size)
    if head is not None and (head.root.hex() != a.root or head.hash().hex() != a.head_hash):
        return failed(f"the log's head at size {a.size} is not the anchored one: the log was "
                      "changed after anchoring")
    now = reader.head
    if now is None or now.size < a.size:
        return failed(f"the log holds fewer than the anchored {a.size} leaves: the log was "
                      "changed after anchoring")
    proof = reader.consistency_proof(a.size, now.size)
    if not verify_consistency_path(a.size, now.size, proof.path, bytes.fromhex(a.root),
                                   now.root):
        return failed(f"the log of {now.size} leaves does not extend the anchored tree of "
                      f"{a.size}: the log was changed after anchoring")
    return AnchorCheck(a, True, tip - a.block_number + 1)
