"""One chain two ways: followed live by ``chainwatch produce rpc``, and exported by
ethereum-etl (its ``stream`` command, which enriches transactions with their receipts, in
its own virtual environment from ``bash .ci/tools.sh``) then replayed with ``chainwatch
produce replay``. Both give the same records: the same item ids with the same fields."""

from __future__ import annotations

import json
import random
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from web3.types import Wei

from pipeline.codec import to_wire_dict
from pipeline.settings import Settings
from pipeline.topics import ensure_topics
from tests.anvil import ETH, Anvil, Uniswap, anvil_fixture, uniswap_fixture
from tests.conftest import CHAINWATCH, cli_env, unique
from tests.helpers import read_chain_topics

__all__ = ["anvil_fixture", "uniswap_fixture"]
pytestmark = pytest.mark.integration
ETHEREUMETL = Path(__file__).resolve().parents[2] / ".ci/cache/ethereum-etl/bin/ethereumetl"


def _records(settings: Settings) -> dict[str, dict[str, Any]]:
    """Every record on the transactions and DEX topics, by (kind and) item id."""
    return {f"{type(record).__name__}:{record.item_id}": to_wire_dict(record)
            for messages in read_chain_topics(settings).values() for _, record in messages}


def _export(anvil: Anvil, tmp: Path) -> dict[str, Path]:
    """ethereum-etl's stream of blocks 0..head, split by type into JSON lines files."""
    assert ETHEREUMETL.exists(), "ethereum-etl is missing: run `bash .ci/tools.sh`"
    synced = tmp / "last_synced_block.txt"
    with (tmp / "etl.jsonl").open("w") as out, (tmp / "etl.log").open("w") as log:
        proc = subprocess.Popen([str(ETHEREUMETL), "stream", "--provider-uri", anvil.url,
                                 "--start-block", "0", "-e", "transaction,log,token_transfer",
                                 "-l", str(synced), "--period-seconds", "1"],
                                stdout=out, stderr=log)
        try:
            deadline = time.monotonic() + 120
            while not (synced.exists() and synced.read_text().strip() == str(anvil.head)):
                assert proc.poll() is None and time.monotonic() < deadline, \
                    (tmp / "etl.log").read_text()[-2000:]
                time.sleep(0.2)
        finally:
            proc.terminate()
            proc.wait(30)
    files = {kind: tmp / f"{kind}.jsonl" for kind in ("transaction", "log", "token_transfer")}
    handles = {kind: path.open("w") for kind, path in files.items()}
    for line in (tmp / "etl.jsonl").read_text().splitlines():
        item = json.loads(line)
        handles[item["type"]].write(line + "\n")
    for h in handles.values():
        h.close()
    return files


def test_the_live_source_and_an_ethereum_etl_replay_give_the_same_records(
        anvil: Anvil, uniswap: Uniswap, settings: Settings, tmp_path: Path) -> None:
    rng = random.Random(3)
    owner, traders = anvil.accounts[0], anvil.accounts[1:6]
    token = uniswap.new_token("Parity", "PAR", 10**27, owner)
    pair = uniswap.create_pool(token, 20 * ETH, 10**26, owner)
    for _ in range(15):
        a = traders[rng.randrange(len(traders))]
        uniswap.buy(token, a, ETH // rng.randrange(5, 50))
    uniswap.sell(token, traders[0], uniswap.balance_of(token, traders[0]) // 2)
    lp = uniswap.pair(token)
    anvil.transact(lp.functions.transfer(traders[1], 10**15), owner)  # an LP holder move
    uniswap.remove_liquidity(token, owner, share=0.5)
    anvil.send({"from": traders[2], "to": traders[3], "value": Wei(10**17)})  # plain ether

    live = settings
    ensure_topics(live)
    done = subprocess.run([CHAINWATCH, "produce", "rpc", "--rpc-url", anvil.url,
                           "--start-block", "0", "--until-block", str(anvil.head), "--json",
                           "--rate", "1000"],  # the local node: no provider's rate limit
                          env=cli_env(live), capture_output=True, text=True, timeout=300,
                          check=False)
    assert done.returncode == 0, done.stderr

    files = _export(anvil, tmp_path)
    (tmp_path / "pools.csv").write_text("pool_address,token0,token1\n" + ",".join(
        x.lower() for x in (pair, lp.functions.token0().call(), lp.functions.token1().call()))
        + "\n")
    replayed = settings.replace(**{f"topics__{role}": unique(f"r-{role}")
                                   for role in settings.topics.all()})
    ensure_topics(replayed)
    for fmt, path, extra in (("transactions", files["transaction"], []),
                             ("token-transfers", files["token_transfer"], []),
                             ("logs", files["log"], ["--pools", str(tmp_path / "pools.csv")])):
        run = subprocess.run([CHAINWATCH, "produce", "replay", str(path), "--format", fmt,
                              "--json", *extra], env=cli_env(replayed), capture_output=True,
                             text=True, timeout=300, check=False)
        assert run.returncode == 0, run.stderr
        assert json.loads(run.stdout)["dead_lettered"] == 0, run.stdout

    got_live, got_replay = _records(live), _records(replayed)
    kinds = {k.split(":")[0] for k in got_live}
    assert kinds == {"Transaction", "TokenTransfer", "DexEvent"}
    assert sum(k.startswith("DexEvent") for k in got_live) > 30
    assert set(got_live) == set(got_replay)  # the same item ids
    differ = {k: (got_live[k], got_replay[k]) for k in got_live if got_live[k] != got_replay[k]}
    assert not differ, next(iter(differ.items()))  # and the same fields
