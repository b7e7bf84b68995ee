"""The synthetic chain's world: its configuration, its state, and the writer of its records.

:class:`World` holds everything that changes as the chain runs (wallets and their nonces,
constant-product pools (:mod:`producers.amm`), the open :class:`Block` and its base fee) and
writes every record: background traffic (:mod:`producers.synth`) and campaigns
(:mod:`producers.campaigns`) both act through it, so their trades move reserves and prices
alike. Addresses and hashes are derived from the seed, never drawn from real keys.

>>> world = World(SynthConfig(seed=1, wallets=10, tokens=2))
>>> tx = world.transaction(world.pick_wallet(), world.pick_wallet(), 10**18, TRANSFER_GAS)
>>> (tx.block_number, tx.transaction_index, tx.nonce, len(world.pools))
(16000000, 0, 0, 2)
"""

from __future__ import annotations

import hashlib
import math
import random
from dataclasses import dataclass, field
from typing import Any

from pipeline.records import DexEvent, Transaction
from producers.amm import Pool

WETH = "0xc02aaa39b223fe8d0a0e5c4f27ead9083c756cc2"
ROUTER = "0x7a250d5630b4cf539739df2c5dacb4c659f2488d"  # Uniswap V2 router
ETHER = 10**18
GWEI = 10**9
TRANSFER_GAS = 21_000
SWAP_GAS = 150_000
LIQUIDITY_GAS = 200_000
BLOCK_GAS_TARGET = 15_000_000


@dataclass(frozen=True)
class SynthConfig:
    """What world to build and how busy it is. Same config, same chain, byte for byte."""

    seed: int = 0
    blocks: int = 300
    wallets: int = 5_000
    tokens: int = 12
    txs_per_block: float = 30.0
    swap_share: float = 0.4
    liquidity_share: float = 0.03
    contract_share: float = 0.1
    start_block: int = 16_000_000
    start_timestamp: int = 1_672_531_200  # 2023-01-01T00:00:00Z
    block_time_s: int = 12
    campaigns: dict[str, float] = field(default_factory=lambda: {"pump_and_dump": 4.0})
    """Campaign type → campaigns per 1,000 blocks (at least one of each listed type)."""
    difficulty: float = 0.5
    """0 (blatant) … 1 (subtle): size of campaigns relative to their pool's normal volume."""


@dataclass
class Block:
    number: int
    timestamp: int
    base_fee: int
    transactions: list[Transaction] = field(default_factory=list)
    dex_events: list[DexEvent] = field(default_factory=list)


def derive_address(*parts: object) -> str:
    """A deterministic 20-byte address from any parts (never a real key)."""
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).hexdigest()
    return "0x" + digest[:40]


def derive_hash(*parts: object) -> str:
    return "0x" + hashlib.sha256("/".join(map(str, parts)).encode()).hexdigest()


class World:
    """Mutable chain state plus the writer of records; campaigns act through it."""

    def __init__(self, config: SynthConfig) -> None:
        self.config = config
        self.rng = random.Random(config.seed)
        rng = self.rng
        self.wallets = [derive_address(config.seed, "wallet", i) for i in range(config.wallets)]
        weights = [rng.paretovariate(1.2) for _ in self.wallets]
        total = 0.0
        self._cum_weights: list[float] = []
        for w in weights:
            total += w
            self._cum_weights.append(total)
        self.contracts = set(rng.sample(self.wallets, int(config.wallets * config.contract_share)))
        self.nonces: dict[str, int] = {}
        self.pools: list[Pool] = []
        self.fair_price: dict[str, float] = {}
        for i in range(config.tokens):
            token = derive_address(config.seed, "token", i)
            weth_reserve = int(rng.lognormvariate(math.log(300), 1.0) * ETHER)
            price = rng.lognormvariate(math.log(1e-4), 2.0)  # WETH per token unit
            pool = Pool(address=derive_address(config.seed, "pool", i), token0=token,
                        token1=WETH, reserve0=int(weth_reserve / price), reserve1=weth_reserve,
                        creator=self.pick_wallet())
            self.pools.append(pool)
            self.fair_price[pool.address] = pool.price
        self.block: Block = Block(config.start_block, config.start_timestamp, 20 * GWEI)
        self._fresh = 0

    # -- actors ---------------------------------------------------------------------------------

    def pick_wallet(self) -> str:
        return self.rng.choices(self.wallets, cum_weights=self._cum_weights)[0]

    def fresh_wallet(self, purpose: str) -> str:
        """An address never seen before (campaigns use these for sybil buyers)."""
        self._fresh += 1
        return derive_address(self.config.seed, "fresh", purpose, self._fresh)

    # -- writing records ------------------------------------------------------------------------

    def transaction(self, sender: str, to: str | None, value: int, gas: int,
                    input_data: str = "0x") -> Transaction:
        block = self.block
        index = len(block.transactions)
        nonce = self.nonces.get(sender, 0)
        self.nonces[sender] = nonce + 1
        tip = int(self.rng.lognormvariate(math.log(1.5 * GWEI), 0.5))
        tx = Transaction(
            hash=derive_hash(self.config.seed, block.number, index),
            nonce=nonce, block_number=block.number, block_timestamp=block.timestamp,
            transaction_index=index, from_address=sender, to_address=to, value=value, gas=gas,
            gas_price=block.base_fee + tip, input=input_data,
            receipt_gas_used=int(gas * self.rng.uniform(0.6, 1.0)) if gas > TRANSFER_GAS
            else gas, receipt_status=1, max_fee_per_gas=2 * block.base_fee + tip,
            max_priority_fee_per_gas=tip, transaction_type=2,
        )
        block.transactions.append(tx)
        return tx

    def swap(self, trader: str, pool: Pool, buy: bool, amount_in: int) -> int:
        """A swap through the router: ``buy`` spends WETH for the token. Returns amount out."""
        if amount_in <= 0:
            return 0
        tx = self.transaction(trader, ROUTER, amount_in if buy else 0, SWAP_GAS, "0x38ed1739")
        out = pool.swap(zero_for_one=not buy, amount_in=amount_in)
        self._dex(pool, tx, "swap", sender=ROUTER, to=trader,
                  amount0_in=0 if buy else amount_in, amount1_in=amount_in if buy else 0,
                  amount0_out=out if buy else 0, amount1_out=0 if buy else out)
        return out

    def add_liquidity(self, provider: str, pool: Pool, weth: int) -> int:
        tx = self.transaction(provider, ROUTER, weth, LIQUIDITY_GAS, "0xf305d719")
        tokens = weth * pool.reserve0 // max(pool.reserve1, 1)
        used0, used1, liquidity = pool.mint(tokens, weth)
        self._dex(pool, tx, "mint", sender=ROUTER, to=provider, amount0_in=used0,
                  amount1_in=used1, liquidity=liquidity)
        return liquidity

    def launch_pool(self, creator: str, address: str, token: str, token_amount: int,
                    weth_amount: int) -> Pool:
        """Open a new token/WETH pool whose first mint by ``creator`` sets its price.

        The pool joins :attr:`pools` and :attr:`fair_price`, so background traffic trades it.
        """
        pool = Pool(address=address, token0=token, token1=WETH, reserve0=0, reserve1=0,
                    creator=creator)
        tx = self.transaction(creator, ROUTER, weth_amount, LIQUIDITY_GAS, "0xf305d719")
        used0, used1, liquidity = pool.mint(token_amount, weth_amount)
        self._dex(pool, tx, "mint", sender=ROUTER, to=creator, amount0_in=used0,
                  amount1_in=used1, liquidity=liquidity)
        self.pools.append(pool)
        self.fair_price[address] = pool.price
        return pool

    def remove_liquidity(self, provider: str, pool: Pool, liquidity: int) -> tuple[int, int]:
        tx = self.transaction(provider, ROUTER, 0, LIQUIDITY_GAS, "0x02751cec")
        amount0, amount1 = pool.burn(liquidity)
        self._dex(pool, tx, "burn", sender=ROUTER, to=provider, amount0_out=amount0,
                  amount1_out=amount1, liquidity=liquidity)
        return amount0, amount1

    def _dex(self, pool: Pool, tx: Transaction, kind: str, **fields: Any) -> None:
        self.block.dex_events.append(DexEvent(
            pool_address=pool.address, token0=pool.token0, token1=pool.token1, kind=kind,
            block_number=tx.block_number, block_timestamp=tx.block_timestamp,
            transaction_hash=tx.hash, log_index=len(self.block.dex_events),
            reserve0=pool.reserve0, reserve1=pool.reserve1,
            transaction_index=tx.transaction_index, **fields,
        ))

    # -- blocks ---------------------------------------------------------------------------------

    def next_block(self) -> None:
        """Close the current block: move the base fee by how full it was (EIP-1559)."""
        gas_used = sum(tx.receipt_gas_used or tx.gas for tx in self.block.transactions)
        delta = (gas_used - BLOCK_GAS_TARGET) / BLOCK_GAS_TARGET / 8
        base_fee = max(int(self.block.base_fee * (1 + delta)), GWEI // 10)
        self.block = Block(self.block.number + 1,
                           self.block.timestamp + self.config.block_time_s, base_fee)
