"""The live pipeline on a real chain: ``produce rpc`` → broker → ``score`` → ``alerts sink``,
each the command a user runs, on anvil with the real Uniswap-V2 contracts and real trades.

Three pools: one with ordinary two-way trading, one pumped (24 large buys in 3 blocks after
13 minutes of ordinary trading) and dumped, one rugged (its creator removes all liquidity).
The pumped pool's ``pump_and_dump`` and the rugged pool's ``rug_pull`` are raised within 2
blocks of the move; nothing is raised on the ordinary pool. (``rug_risk`` needs a pool's
first hours, which a test chain does not have; it is not expected here.) Then a reorg
orphans the rug pull's block: the source retracts it, the scorer raises a ``retraction``
naming the rug pull's alerts, and the alert store marks them, and only them.
"""

from __future__ import annotations

import json
import random
import subprocess
from pathlib import Path
from typing import Any

import pytest

from pipeline.alert_store import AlertStore
from pipeline.settings import Settings
from pipeline.topics import ensure_topics
from tests.anvil import ETH, Anvil, Uniswap, anvil_fixture, uniswap_fixture
from tests.conftest import CHAINWATCH, cli_env

__all__ = ["anvil_fixture", "uniswap_fixture"]
pytestmark = pytest.mark.integration
# a fresh group's join takes half the session on the local broker: 1 s, not 5 s
FAST_JOIN = ("--session-timeout", "2")
LOCAL_RATE = ("--rate", "1000")  # requests/s to the local node (the default 50 is for providers)


def _trade(uniswap: Uniswap, token: Any, accounts: list[Any], rng: random.Random, *, n: int,
           eth: tuple[int, int]) -> None:
    for _ in range(n):
        a = accounts[rng.randrange(len(accounts))]
        balance = uniswap.balance_of(token, a)
        if rng.random() < 0.55 or not balance:
            uniswap.buy(token, a, ETH // rng.randrange(*eth))
        else:
            uniswap.sell(token, a, balance // 3)


def _run(settings: Settings, *args: str) -> dict[str, Any]:
    done = subprocess.run([CHAINWATCH, *args, "--json"], env=cli_env(settings),
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def test_pump_and_rug_are_caught_within_2_blocks_and_normal_trading_is_quiet(
        anvil: Anvil, uniswap: Uniswap, settings: Settings, tmp_path: Path) -> None:
    rng = random.Random(5)
    owner, traders = anvil.accounts[0], anvil.accounts[1:9]
    normal = uniswap.new_token("Normal", "NRM", 10**27, owner)
    normal_pool = uniswap.create_pool(normal, 50 * ETH, 10**26, owner).lower()
    _trade(uniswap, normal, traders, rng, n=80, eth=(5, 40))

    pumped = uniswap.new_token("Pump", "PMP", 10**27, owner)
    pumped_pool = uniswap.create_pool(pumped, 20 * ETH, 10**26, owner).lower()
    _trade(uniswap, pumped, traders, rng, n=70, eth=(20, 60))  # 14 minutes of ordinary trading
    pump_block = anvil.head + 1
    anvil.set_automine(False)
    for _ in range(3):  # the pump: 24 buys of 1-2 ETH in three blocks
        for _ in range(8):
            uniswap.buy(pumped, traders[rng.randrange(len(traders))], ETH * rng.randrange(1, 3))
        anvil.mine(1)
    anvil.set_automine(True)
    for seller in traders[:4]:  # the dump
        if balance := uniswap.balance_of(pumped, seller):
            uniswap.sell(pumped, seller, balance)

    rugged = uniswap.new_token("Rug", "RUG", 10**27, owner)
    rugged_pool = uniswap.create_pool(rugged, 30 * ETH, 10**26, owner).lower()
    _trade(uniswap, rugged, traders, rng, n=20, eth=(5, 30))
    rug_block = int(uniswap.remove_liquidity(rugged, owner).mined()["blockNumber"])
    _trade(uniswap, normal, traders, rng, n=10, eth=(5, 40))
    head = anvil.head

    store = tmp_path / "alerts.db"
    run = settings.replace(alerts__store=str(store))
    ensure_topics(run)
    cursor = ["--cursor", str(tmp_path / "chain.cursor")]
    produced = _run(run, "produce", "rpc", "--rpc-url", anvil.url, "--start-block", "0",
                    "--until-block", str(head), "--factory", uniswap.factory.address, *cursor,
                    *LOCAL_RATE)
    assert produced["finished"] and produced["last_block"] == head
    assert produced["dex_events"] > 200 and produced["retractions"] == 0
    scored = _run(run, "score", "--until-caught-up", *FAST_JOIN)
    assert scored["dead_lettered"] == 0
    sunk = _run(run, "alerts", "sink", "--until-caught-up", "--store", str(store))
    assert sunk["stored"] == sum(scored["alerts_by_type"].values())

    with AlertStore.open(str(store), create=False) as s:
        alerts = [x.alert for x in s.query(newest_first=False)]
    by_pool: dict[str, list[tuple[str, int]]] = {}
    for a in alerts:
        by_pool.setdefault(a.subject, []).append((a.type, a.labels["block_number"]))
    assert normal_pool not in by_pool, by_pool  # ordinary trading raises nothing
    pumps = [b for t, b in by_pool.get(pumped_pool, []) if t == "pump_and_dump"]
    assert pumps and pump_block <= min(pumps) <= pump_block + 2, (pump_block, by_pool)
    rugs = [b for t, b in by_pool.get(rugged_pool, []) if t == "rug_pull"]
    assert rugs and rug_block <= min(rugs) <= rug_block + 2, (rug_block, by_pool)
    assert set(by_pool) <= {pumped_pool, rugged_pool}, by_pool

    # a reorg orphans the rug pull's block: its alert is retracted, and the store marks it
    rug_alerts = [a.alert_id for a in alerts if a.type == "rug_pull"]
    anvil.reorg(head - rug_block + 1)  # the new branch: as many empty blocks
    anvil.mine(1)
    again = _run(run, "produce", "rpc", "--rpc-url", anvil.url, "--until-block",
                 str(anvil.head), "--factory", uniswap.factory.address, *cursor, *LOCAL_RATE)
    assert again["reorgs"] == 1 and again["retractions"] == head - rug_block + 1
    _run(run, "score", "--until-caught-up", *FAST_JOIN)
    _run(run, "alerts", "sink", "--until-caught-up", "--store", str(store))
    with AlertStore.open(str(store), create=False) as s:
        retractions = [x.alert for x in s.query(types=["retraction"])]
        marked = s.retracted(rug_alerts)
        pumps_marked = s.retracted([a.alert_id for a in alerts if a.type == "pump_and_dump"])
    assert retractions and set(rug_alerts) <= {i for r in retractions
                                               for i in r.evidence["retracted"]}
    assert set(marked) == set(rug_alerts) and pumps_marked == {}  # the pump's block stands
