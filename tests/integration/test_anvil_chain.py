"""The anvil harness (tests/anvil.py) against a real node: Uniswap-V2 deployed from the npm
artefacts, a pool's life from creation to rug pull as its logs tell it, reorgs, stream time
and snapshots, and the node's process handling."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from web3.types import Wei

from tests.anvil import (
    ETH,
    GENESIS_TIMESTAMP,
    INSTALL_HINT,
    SECONDS_PER_BLOCK,
    Anvil,
    AnvilError,
    Uniswap,
    anvil_fixture,  # noqa: F401 - the `anvil` fixture
    start_anvil,
    uniswap_fixture,  # noqa: F401 - the `uniswap` fixture
)

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def logs(contract: Any, event: str) -> list[Any]:
    """Every ``event`` log of ``contract`` on the chain, oldest first."""
    return list(getattr(contract.events, event).get_logs(from_block=0, to_block="latest"))


def price(uniswap: Uniswap, token: Any) -> float:
    """WETH per token."""
    token_reserve, weth_reserve = uniswap.reserves(token)
    return weth_reserve / token_reserve


def test_a_pool_from_creation_to_rug_pull(anvil: Anvil, uniswap: Uniswap) -> None:
    accounts = anvil.accounts
    creator, traders, pumpers = accounts[1], accounts[2:5], accounts[5:9]
    token = uniswap.new_token("Rug Token", "RUG", 1_000_000 * ETH, creator)
    pair_address = uniswap.create_pool(token, 50 * ETH, 500_000 * ETH, creator)
    pair = uniswap.pair(token)
    assert uniswap.factory.functions.getPair(token.address, uniswap.weth.address).call() \
        == pair_address
    assert uniswap.reserves(token) == (500_000 * ETH, 50 * ETH)

    # everyday trading: three buys, two sells of half the tokens bought
    for i, trader in enumerate(traders):
        uniswap.buy(token, trader, (i + 1) * ETH // 2)
    for trader in traders[:2]:
        uniswap.sell(pair_address, trader, uniswap.balance_of(token, trader) // 2)

    # the pump: 4 accounts buy 10 ether 3 times, 4 buys a block
    before_pump = price(uniswap, token)
    anvil.set_automine(False)
    pump = []
    for _ in range(3):
        pump += [uniswap.buy(token, pumper, 10 * ETH) for pumper in pumpers]
        anvil.mine()
    pumped = price(uniswap, token)
    # the dump: each sells all in one block (approving the router in it first)
    dump = [uniswap.sell(token, pumper, uniswap.balance_of(token, pumper))
            for pumper in pumpers]
    anvil.mine()
    anvil.set_automine(True)
    assert all(tx.receipt is None for tx in pump + dump)  # sent pending, mined by mine()
    pump_blocks = Counter(tx.mined()["blockNumber"] for tx in pump)
    dump_blocks = Counter(tx.mined()["blockNumber"] for tx in dump)
    assert sorted(pump_blocks.values()) == [4, 4, 4]
    assert list(dump_blocks.values()) == [4]
    assert pumped > 5 * before_pump
    assert price(uniswap, token) < 1.2 * before_pump

    # the rug pull: the creator takes all the liquidity out
    reserves_before = uniswap.reserves(token)
    rug = uniswap.remove_liquidity(token, creator)
    reserves_after = uniswap.reserves(token)
    assert all(after < before * 1e-12 for after, before in zip(reserves_after, reserves_before,
                                                               strict=True))

    # the logs tell the same story
    weth = uniswap.weth.address
    (created,) = logs(uniswap.factory, "PairCreated")
    assert created.args.pair == pair_address
    assert {created.args.token0, created.args.token1} == {token.address, weth}
    token_is_0 = created.args.token0 == token.address

    def amounts(args: Any, kind: str) -> tuple[int, int]:
        """(token, WETH) amounts of a Mint, Burn or Swap's ``kind`` ("", "In", "Out")."""
        a0, a1 = args[f"amount0{kind}"], args[f"amount1{kind}"]
        return (a0, a1) if token_is_0 else (a1, a0)

    (mint,) = logs(pair, "Mint")
    assert amounts(mint.args, "") == (500_000 * ETH, 50 * ETH)
    (burn,) = logs(pair, "Burn")
    assert burn.transactionHash == rug.hash
    assert burn.args.to == uniswap.router.address  # it unwraps the WETH for the creator
    burnt = amounts(burn.args, "")
    assert tuple(b + a for b, a in zip(burnt, reserves_after, strict=True)) == reserves_before

    swaps = logs(pair, "Swap")
    buys = [s for s in swaps if amounts(s.args, "In")[1] > 0]
    sells = [s for s in swaps if amounts(s.args, "In")[0] > 0]
    assert (len(swaps), len(buys), len(sells)) == (21, 15, 6)
    assert Counter(s.args.to for s in buys) == Counter({traders[0]: 1, traders[1]: 1,
                                                        traders[2]: 1, **dict.fromkeys(pumpers, 3)})
    assert {s.args.to for s in sells} == {uniswap.router.address}
    assert Counter(s.blockNumber for s in swaps if s.blockNumber in pump_blocks) == pump_blocks

    syncs = logs(pair, "Sync")
    assert len(syncs) == 1 + 21 + 1  # the mint, each swap, the burn
    last = syncs[-1].args
    assert amounts({"amount0": last.reserve0, "amount1": last.reserve1}, "") == reserves_after

    transfers = [(t.args["from"], t.args.to) for t in logs(pair, "Transfer")]  # LP tokens
    zero = "0x" + "00" * 20
    assert transfers == [(zero, zero), (zero, creator),  # MINIMUM_LIQUIDITY locked, creator's
                         (creator, pair_address), (pair_address, zero)]  # the rug's burn

    # stream time: one block every SECONDS_PER_BLOCK from GENESIS_TIMESTAMP
    stamps = [anvil.w3.eth.get_block(n)["timestamp"] for n in range(anvil.head + 1)]
    assert stamps == [GENESIS_TIMESTAMP + SECONDS_PER_BLOCK * n for n in range(anvil.head + 1)]


def test_reorg_replaces_the_last_blocks_at_the_same_height(anvil: Anvil,
                                                          uniswap: Uniswap) -> None:
    accounts = anvil.accounts
    token = uniswap.new_token("Token", "TKN", 1_000 * ETH, accounts[1])
    uniswap.create_pool(token, 10 * ETH, 1_000 * ETH, accounts[1])
    orphaned = [uniswap.buy(token, buyer, ETH) for buyer in accounts[2:5]]
    head = anvil.head
    old = anvil.block_hashes(head - 3, head)

    replacement = uniswap.buy_request(token, accounts[7], 2 * ETH)
    anvil.reorg(3, [(replacement, 0)])

    new = anvil.block_hashes(head - 3, head)
    assert anvil.head == head
    assert new[0] == old[0]  # the common ancestor
    assert all(n != o for n, o in zip(new[1:], old[1:], strict=True))
    assert anvil.w3.eth.get_block(head)["parentHash"] == new[2]
    swaps = [s for s in logs(uniswap.pair(token), "Swap") if s.blockNumber > head - 3]
    assert [(s.blockNumber, s.args.to) for s in swaps] == [(head - 2, accounts[7])]
    for tx in orphaned:  # dropped, not replayed
        assert anvil.rpc("eth_getTransactionReceipt", tx.hash.to_0x_hex()) is None
    assert uniswap.balance_of(token, accounts[2]) == 0


def test_stream_time_snapshots_and_automine(anvil: Anvil) -> None:
    sender, receiver = anvil.accounts[0], anvil.accounts[1]
    anvil.mine(2)
    assert anvil.w3.eth.get_block("latest")["timestamp"] == GENESIS_TIMESTAMP + 24

    anvil.next_timestamp(GENESIS_TIMESTAMP + 1_000)
    anvil.mine(2)  # the next block at that time, the one after it SECONDS_PER_BLOCK later
    assert [anvil.w3.eth.get_block(n)["timestamp"] for n in (3, 4)] == \
        [GENESIS_TIMESTAMP + 1_000, GENESIS_TIMESTAMP + 1_000 + SECONDS_PER_BLOCK]

    snapshot = anvil.snapshot()
    sent = anvil.send({"from": sender, "to": receiver, "value": Wei(ETH)})
    assert sent.receipt is not None and sent.receipt["blockNumber"] == 5
    anvil.revert(snapshot)
    assert anvil.head == 4
    assert anvil.w3.eth.get_balance(receiver) == 10_000 * ETH
    with pytest.raises(AnvilError, match="no snapshot"):
        anvil.revert(snapshot)

    anvil.set_automine(False)
    pending = anvil.send({"from": sender, "to": receiver, "value": Wei(ETH)})
    assert pending.receipt is None and anvil.head == 4
    anvil.mine()
    assert pending.mined()["blockNumber"] == 5
    with pytest.raises(AnvilError, match="Reorg depth must not exceed"):
        anvil.reorg(10)


def test_a_missing_binary_says_how_to_install_it(tmp_path: Path) -> None:
    with pytest.raises(AnvilError, match=r"is missing: run `bash \.ci/tools\.sh`") as caught:
        start_anvil(tmp_path, binary=tmp_path / "no-anvil")
    assert INSTALL_HINT in str(caught.value)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_stop_ends_anvil_and_so_does_the_death_of_its_starter(tmp_path: Path) -> None:
    node = start_anvil(tmp_path)
    node.stop()
    assert node.process.returncode is not None
    node.stop()  # harmless twice

    starter = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time\nfrom pathlib import Path\nfrom tests.anvil import start_anvil\n"
         "node = start_anvil(Path(sys.argv[1]))\nprint(node.process.pid, flush=True)\n"
         "time.sleep(60)\n", str(tmp_path)],
        cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert starter.stdout is not None
    anvil_pid = int(starter.stdout.readline())
    starter.stdout.close()
    starter.send_signal(signal.SIGKILL)  # no teardown, no atexit: only the kernel's signal
    starter.wait()
    deadline = time.monotonic() + 10
    while alive(anvil_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(anvil_pid)


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie nobody reaped has ended)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"
