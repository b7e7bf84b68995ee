"""``chainwatch produce rpc`` following a real node (anvil, real Uniswap-V2 contracts) into a
real broker, as a user runs it: through reorgs, with confirmations, and through SIGKILLs.

What the topics must hold is worked out from the node itself at the end, independently of the
source's code: every transaction of the canonical chain, every ERC-20 ``Transfer`` log, and
every ``Sync``, ``Swap`` and LP ``Transfer`` log of the pool, each exactly once once the
retracted records are taken out. A record is retracted when a retraction of its block follows
it on its partition.
"""

from __future__ import annotations

import collections
import json
import random
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipeline.records import Retraction
from pipeline.settings import Settings
from pipeline.topics import ensure_topics
from producers.evm_logs import SWAP, SYNC, TRANSFER
from tests.anvil import ETH, Anvil, Uniswap, anvil_fixture, uniswap_fixture
from tests.conftest import CHAINWATCH, cli_env
from tests.helpers import read_chain_topics, sigkill

__all__ = ["anvil_fixture", "uniswap_fixture"]
pytestmark = pytest.mark.integration
CAUGHT_UP_S = 60.0


def _pool(uniswap: Uniswap, anvil: Anvil) -> tuple[Any, str]:
    owner = anvil.accounts[0]
    token = uniswap.new_token("Test", "TST", 10**24, owner)
    pair = uniswap.create_pool(token, 10 * ETH, 10**23, owner)
    return token, pair.lower()


def _canonical(anvil: Anvil, pair: str) -> collections.Counter[tuple[str, str]]:
    """(topic role, item id) of every record the canonical chain should give."""
    want: collections.Counter[tuple[str, str]] = collections.Counter()
    for n in range(anvil.head + 1):
        block = anvil.rpc("eth_getBlockByNumber", hex(n), True)
        for tx in block["transactions"]:
            want["transactions", "transaction_" + tx["hash"]] += 1
        for receipt in anvil.rpc("eth_getBlockReceipts", hex(n)) or []:
            for entry in receipt["logs"]:
                where = f"{entry['transactionHash']}_{int(entry['logIndex'], 16)}"
                item = "log_" + where
                topics = entry["topics"]
                if topics[0] == TRANSFER and len(topics) == 3:
                    want["transactions", "token_transfer_" + where] += 1
                if entry["address"].lower() == pair and topics[0] in (SYNC, SWAP, TRANSFER):
                    want["dex", item] += 1
    return want


def _live(settings: Settings, read: dict[tuple[str, int], list[tuple[bytes, Any]]]
          ) -> tuple[collections.Counter[tuple[str, str]], list[Retraction]]:
    """The records no retraction took back, and every retraction seen."""
    roles = {settings.topics.transactions: "transactions", settings.topics.dex: "dex"}
    live: collections.Counter[tuple[str, str]] = collections.Counter()
    retractions: list[Retraction] = []
    for (topic, _), messages in read.items():
        by_block: dict[int, list[str]] = collections.defaultdict(list)
        for _, record in messages:
            if isinstance(record, Retraction):
                retractions.append(record)
                by_block.pop(record.block_number, None)
            else:
                by_block[record.block_number].append(record.item_id)
        for items in by_block.values():
            live.update((roles[topic], i) for i in items)
    return live, retractions


class _Source:
    """``chainwatch produce rpc`` with a cursor, started and stopped as a user would."""

    def __init__(self, anvil: Anvil, settings: Settings, tmp: Path, *extra: str) -> None:
        # a local node: 1000 requests/s unless a test paces it (--rate given in ``extra``)
        rate = [] if "--rate" in extra else ["--rate", "1000"]
        self.args = [CHAINWATCH, "produce", "rpc", "--rpc-url", anvil.url, "--start-block",
                     "0", "--cursor", str(tmp / "chain.cursor"), "--poll-interval", "0.1",
                     *rate, *extra]
        self.env = cli_env(settings)
        self.cursor = tmp / "chain.cursor"
        self.tmp = tmp
        self.runs = 0
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> None:
        self.runs += 1
        with (self.tmp / f"rpc-{self.runs}.log").open("w") as log:  # the child keeps a copy
            self.proc = subprocess.Popen(self.args, env=self.env, stdout=subprocess.DEVNULL,
                                         stderr=log, text=True)

    def state(self) -> dict[str, Any]:
        try:
            return dict(json.loads(self.cursor.read_text()))
        except (OSError, ValueError):
            return {}

    def wait_for(self, anvil: Anvil, confirmations: int = 0) -> None:
        """Until the cursor has the node's block ``head - confirmations`` as its tip."""
        deadline = time.monotonic() + CAUGHT_UP_S
        while time.monotonic() < deadline:
            assert self.proc is not None and self.proc.poll() is None, self.logs()
            target = anvil.head - confirmations
            kept = self.state().get("kept") or []
            want = anvil.rpc("eth_getBlockByNumber", hex(target), False)["hash"]
            if kept and kept[-1][0] == target and kept[-1][1] == want:
                return
            time.sleep(0.05)
        raise AssertionError(f"the source did not catch up with the node: {self.logs()}")

    def stop(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        assert self.proc.wait(30) == 0, self.logs()

    def logs(self) -> str:
        return "\n".join(p.read_text() for p in sorted(self.tmp.glob("rpc-*.log")))


@pytest.fixture
def source_settings(settings: Settings) -> Iterator[Settings]:
    ensure_topics(settings)
    yield settings


def _trade(uniswap: Uniswap, anvil: Anvil, token: Any, n: int, seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(n):
        account = anvil.accounts[rng.randrange(1, 6)]
        uniswap.buy(token, account, ETH // rng.randrange(5, 50))


def test_reorgs_of_depth_1_to_5_are_retracted_and_nothing_is_lost_or_doubled(
        anvil: Anvil, uniswap: Uniswap, source_settings: Settings, tmp_path: Path) -> None:
    token, pair = _pool(uniswap, anvil)
    source = _Source(anvil, source_settings, tmp_path)
    source.start()
    orphaned: list[tuple[int, str, set[str]]] = []  # block, hash, the item ids it held
    for depth in range(1, 6):
        _trade(uniswap, anvil, token, 6, depth)
        source.wait_for(anvil)
        head = anvil.head
        for n in range(head - depth + 1, head + 1):
            block = anvil.rpc("eth_getBlockByNumber", hex(n), True)
            orphaned.append((n, block["hash"], {"transaction_" + t["hash"]
                                                for t in block["transactions"]}))
        new = uniswap.buy_request(token, anvil.accounts[7], ETH // (depth + 10))
        anvil.reorg(depth, [(new, 0)])
        source.wait_for(anvil)
    source.stop()

    read = read_chain_topics(source_settings)
    live, retractions = _live(source_settings, read)
    assert live == _canonical(anvil, pair)  # the canonical chain exactly once: no loss, no dup
    retracted = {(r.block_number, r.block_hash) for r in retractions}
    assert retracted == {(n, h) for n, h, _ in orphaned}
    for n, h, items in orphaned:  # each of its records is followed by its retraction
        assert items
        for (_, _), messages in read.items():
            seen = [i for i, (_, r) in enumerate(messages) if r.item_id in items]
            ends = [i for i, (_, r) in enumerate(messages)
                    if isinstance(r, Retraction) and (r.block_number, r.block_hash) == (n, h)]
            if seen:
                assert ends and max(seen) < min(ends), (n, h)
    assert all(r.reason.startswith("reorg: replaced by 0x") for r in retractions)


def test_with_6_confirmations_no_retraction_is_needed(
        anvil: Anvil, uniswap: Uniswap, source_settings: Settings, tmp_path: Path) -> None:
    token, pair = _pool(uniswap, anvil)
    source = _Source(anvil, source_settings, tmp_path, "--confirmations", "6")
    source.start()
    for depth in range(1, 6):
        _trade(uniswap, anvil, token, 8, depth)
        source.wait_for(anvil, confirmations=6)
        anvil.reorg(depth, [(uniswap.buy_request(token, anvil.accounts[7], ETH // 20), 0)])
    anvil.mine(6)
    source.wait_for(anvil, confirmations=6)
    source.stop()
    live, retractions = _live(source_settings, read_chain_topics(source_settings))
    assert retractions == []
    below = anvil.head - 6
    want = _canonical(anvil, pair)
    assert set(live) <= set(want) and all(n == 1 for n in live.values())
    missing = {k for k in want if k not in live}
    late = {f"transaction_{t['hash']}" for n in range(below + 1, anvil.head + 1)
            for t in anvil.rpc("eth_getBlockByNumber", hex(n), True)["transactions"]}
    assert {i for role, i in missing if role == "transactions" and i.startswith(
        "transaction_")} <= late  # only the last 6 blocks are not read yet


def test_sigkilled_and_restarted_it_resumes_with_no_gap_and_only_identical_resends(
        anvil: Anvil, uniswap: Uniswap, source_settings: Settings, tmp_path: Path) -> None:
    token, pair = _pool(uniswap, anvil)
    _trade(uniswap, anvil, token, 120, 7)
    head = anvil.head
    source = _Source(anvil, source_settings, tmp_path, "--batch-blocks", "4", "--rate", "40",
                     "--until-block", str(head))
    rng = random.Random(11)
    kills, seen = 0, 0
    while kills < 4:  # each kill after some progress, mid-stream
        source.start()
        deadline = time.monotonic() + CAUGHT_UP_S
        while source.state().get("next_block", 0) <= seen and time.monotonic() < deadline:
            assert source.proc is not None and source.proc.poll() is None, source.logs()
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 0.4))
        assert source.proc is not None and source.proc.poll() is None, source.logs()
        sigkill(source.proc)
        seen = source.state()["next_block"]
        assert seen <= head, "a kill came after the last block was written"
        kills += 1
    source.start()
    assert source.proc is not None and source.proc.wait(120) == 0, source.logs()
    assert source.state()["next_block"] == head + 1
    read = read_chain_topics(source_settings)
    live, retractions = _live(source_settings, read)
    assert retractions == []
    want = _canonical(anvil, pair)
    assert set(live) == set(want)  # no gap
    copies: dict[tuple[str, str], set[bytes]] = collections.defaultdict(set)
    for (topic, _), messages in read.items():
        for value, record in messages:
            copies[topic, record.item_id].add(value)
    assert all(len(v) == 1 for v in copies.values())  # any resend is byte-identical
    assert "Traceback" not in source.logs()


def test_over_websocket_it_writes_the_same_chain(
        anvil: Anvil, uniswap: Uniswap, source_settings: Settings, tmp_path: Path) -> None:
    token, pair = _pool(uniswap, anvil)
    _trade(uniswap, anvil, token, 10, 3)
    ws = anvil.url.replace("http://", "ws://")
    done = subprocess.run([CHAINWATCH, "produce", "rpc", "--rpc-url", ws, "--start-block", "0",
                           "--until-block", str(anvil.head), "--json", "--rate", "1000"],
                          env=cli_env(source_settings), capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["source"] == ws and summary["finished"]
    live, retractions = _live(source_settings, read_chain_topics(source_settings))
    assert retractions == [] and live == _canonical(anvil, pair)
