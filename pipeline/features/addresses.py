"""Per-address features from the transactions topic (transactions and token transfers).

:class:`AddressFeatures` keeps, per address seen as a sender or a recipient, when it was first
and last seen, lifetime counts and ETH sent and received, the running mean and variance of the
log value it sends, and its distinct counterparties over the last ``window`` blocks (fan-out
as a sender, fan-in as a recipient). :class:`BaseFee` estimates each block's base fee online,
since records carry none. Each transaction becomes a flat ``dict[str, float]``:

=====================  ======================================================================
``log_value``          log10(1 + value in ether)
``gas_premium``        log10(gas price / estimated base fee)
``sender_age``         log10(1 + blocks since the sender was first seen)
``sender_idle``        log10(1 + blocks since the sender was last seen before this one)
``sender_new``         1 when this is the first sighting of the sender, else 0
``first_send``         1 when the sender never sent before (it may have received)
``recipient_new``      1 when the recipient was never seen (absent for a contract creation)
``sender_txs_10``      the sender's transactions in the last 10 blocks (this one included)
``fan_out_10``         its distinct recipients, ``fan_in_10`` its distinct senders, 10 blocks
``new_recipients_10``  its sends to never-seen recipients in the last 10 blocks
``novel_value``        ``log_value`` x the share of {first send, new recipient, sender first
                       seen ≤ 10 blocks ago or sending 80-105 % of all it received} that
                       hold: value moved by and to novel wallets, or swept on
``novel_fan_out``      ``new_recipients_10`` of a sender first seen ≤ 10 blocks ago, else 0
``value_out_10``       log10(1 + ether it sent in the last 10 blocks)
``value_z``            z-score of ``log_value`` against the sender's history (≥ 5 sends)
``share_of_received``  value / ether the sender received so far (when it received any)
``log_gas``, ``log_gas_price``  log10 of the gas limit, of 1 + the gas price in gwei
``gas_used_ratio``     gas used / gas limit (when the receipt is known)
``is_call``, ``is_creation``  calldata present; no recipient
=====================  ======================================================================

Blocks may come out of order (the same chain produced twice into one broker, a late
record): a record older than what is known of its address counts as neither age nor idle
time (both clamp at 0), an address's first block is the smallest seen, and no state moves
so that a later record fails.

>>> from pipeline.records import Transaction
>>> feats = AddressFeatures()
>>> def tx(block, sender, to, eth, i=0):
...     return Transaction(hash="0x" + f"{block:031x}{i:033x}", nonce=0, block_number=block,
...         block_timestamp=block * 12, transaction_index=i, from_address=sender,
...         to_address=to, value=int(eth * 10**18), gas=21000, gas_price=30 * 10**9,
...         max_priority_fee_per_gas=10**9)
>>> a, b, c = ("0x" + d * 40 for d in "abc")
>>> x = feats.update(tx(1, a, b, 10.0))
>>> x["sender_new"], x["recipient_new"], x["fan_out_10"]
(1.0, 1.0, 1.0)
>>> x = feats.update(tx(5, b, c, 9.0))
>>> x["first_send"], x["sender_new"], round(x["share_of_received"], 2), x["fan_in_10"]
(1.0, 0.0, 0.9, 1.0)
"""

from __future__ import annotations

import math
from typing import Any

from pipeline.features.store import KeyedStore
from pipeline.features.windows import Counterparties
from pipeline.records import TokenTransfer, Transaction
from pipeline.state import StateError, fields

ETHER = 1e18
WINDOW = 10
LOW_QUANTILE = 0.1
MAX_BLOCK_SAMPLES = 64
YOUNG_BLOCKS = 10
SWEEP_LOW, SWEEP_HIGH = 0.8, 1.05  # a send of most of what the sender ever received


class AddressState:
    """Running state of one address (see :class:`AddressFeatures`)."""

    __slots__ = ("first_block", "inbound", "last_block", "lv_m2", "lv_mean", "n_in", "n_out",
                 "outbound", "received", "sent")

    def __init__(self, block: int) -> None:
        self.first_block = self.last_block = block
        self.n_out = self.n_in = 0
        self.sent = self.received = 0.0  # ether
        self.lv_mean = self.lv_m2 = 0.0  # Welford over log10(1 + value) of sends
        self.outbound: Counterparties | None = None  # created on first use
        self.inbound: Counterparties | None = None

    def state(self) -> dict[str, Any]:
        """Counts and sums as they are; each counterparty window's contents (or None)."""
        return {"v": 1, "blocks": [self.first_block, self.last_block, self.n_out, self.n_in],
                "sums": [self.sent, self.received, self.lv_mean, self.lv_m2],
                "outbound": None if self.outbound is None else self.outbound.state(),
                "inbound": None if self.inbound is None else self.inbound.state()}

    def load_state(self, state: dict[str, Any]) -> None:
        """Load :meth:`state`; a window is rebuilt with the size it had (its ``blocks``
        comes with the address features' configuration, see :meth:`AddressFeatures.load_state`).
        """
        fields(state, "address", 1, blocks=list, sums=list, outbound=(dict, type(None)),
               inbound=(dict, type(None)))
        try:
            self.first_block, self.last_block, self.n_out, self.n_in = (
                int(n) for n in state["blocks"])
            self.sent, self.received, self.lv_mean, self.lv_m2 = (
                float(x) for x in state["sums"])
        except (TypeError, ValueError) as exc:
            raise StateError(f"address state does not fit: {exc}") from exc
        self.outbound = _window(state["outbound"])
        self.inbound = _window(state["inbound"])


def _window(state: dict[str, Any] | None) -> Counterparties | None:
    if state is None:
        return None
    window = Counterparties(WINDOW)  # AddressFeatures.load_state sets its configured size
    window.load_state(state)
    return window


class BaseFee:
    """An online estimate of the block base fee, from gas prices alone.

    A transaction that states its priority fee bounds the base fee exactly
    (``gas_price - tip``; the largest such bound in a block is the base fee); otherwise a low
    quantile of the block's gas prices stands in for it. The estimate used inside block ``b``
    comes from the blocks before ``b`` (smoothed in log space), so it does not depend on the
    order of transactions within a block.

    >>> fee = BaseFee()
    >>> fee.observe(1, 25 * 10**9, 5 * 10**9); fee.observe(2, 30 * 10**9, None)
    >>> fee.estimate / 1e9
    20.0
    """

    __slots__ = ("block", "estimate", "exact", "samples")

    def __init__(self) -> None:
        self.block = -1
        self.estimate = 0.0  # wei; 0 until a block closed
        self.exact = 0  # largest gas_price - tip in the current block
        self.samples: list[int] = []  # gas prices of the current block (bounded)

    def observe(self, block: int, gas_price: int, tip: int | None) -> None:
        if block != self.block:
            self._close()
            self.block = block
        if tip is not None and tip <= gas_price:
            self.exact = max(self.exact, gas_price - tip)
        elif len(self.samples) < MAX_BLOCK_SAMPLES and gas_price > 0:
            self.samples.append(gas_price)

    def state(self) -> dict[str, Any]:
        return {"v": 1, "block": self.block, "estimate": self.estimate, "exact": self.exact,
                "samples": list(self.samples)}

    def load_state(self, state: dict[str, Any]) -> None:
        fields(state, "base fee", 1, block=int, estimate=float, exact=int, samples=list)
        if not all(type(p) is int for p in state["samples"]):
            raise StateError("base fee state: samples must be integers (wei)")
        self.block, self.estimate = state["block"], float(state["estimate"])
        self.exact, self.samples = state["exact"], list(state["samples"])

    def _close(self) -> None:
        if self.exact:
            value = float(self.exact)
        elif self.samples:
            ordered = sorted(self.samples)
            value = float(ordered[int(LOW_QUANTILE * (len(ordered) - 1))])
        else:
            return
        self.estimate = value if not self.estimate else math.sqrt(self.estimate * value)
        self.exact = 0
        self.samples = []

    def premium(self, gas_price: int) -> float:
        """log10(gas price / estimated base fee); 0 before the first estimate."""
        if self.estimate <= 0 or gas_price <= 0:
            return 0.0
        return math.log10(gas_price / self.estimate)


class AddressFeatures:
    """Features of each transaction about its sender and recipient, in bounded memory."""

    def __init__(self, max_addresses: int = 100_000, idle_blocks: int = 50_000,
                 window: int = WINDOW) -> None:
        self.max_addresses = max_addresses
        self.idle_blocks = idle_blocks
        self.window = window
        self.addresses: KeyedStore[AddressState] = KeyedStore(AddressState, max_addresses,
                                                              idle_blocks)
        self.base_fee = BaseFee()

    @property
    def evictions(self) -> int:
        return self.addresses.evictions

    def state(self) -> dict[str, Any]:
        """Every tracked address (in recency order, with the eviction count) and the base
        fee estimate; the limits and the window are configuration."""
        return {"v": 1, "addresses": self.addresses.state(), "base_fee": self.base_fee.state()}

    def load_state(self, state: dict[str, Any]) -> None:
        fields(state, "address features", 1, addresses=dict, base_fee=dict)
        addresses: KeyedStore[AddressState] = KeyedStore(AddressState, self.max_addresses,
                                                         self.idle_blocks)
        addresses.load_state(state["addresses"])
        for key in addresses:  # windows get this instance's size, not the default
            st = addresses.peek(key)
            for window in (st.outbound, st.inbound) if st is not None else ():
                if window is not None:
                    window.blocks = self.window
        base_fee = BaseFee()
        base_fee.load_state(state["base_fee"])
        self.addresses, self.base_fee = addresses, base_fee

    def _state(self, address: str, block: int) -> tuple[AddressState, bool, int]:
        """(state, created now, last block seen before now)."""
        store = self.addresses
        state = store.peek(address)
        if state is None:
            return store.get(address, block), True, block
        previous = state.last_block
        state = store.get(address, block)
        # out of order, it may have been seen earlier than we knew
        state.first_block = min(state.first_block, block)
        return state, False, previous

    def update(self, tx: Transaction) -> dict[str, float]:
        """Fold ``tx`` into its sender's and recipient's state; return the tx's features."""
        block = tx.block_number
        eth = tx.value / ETHER
        lv = math.log10(1.0 + eth)
        self.base_fee.observe(block, tx.gas_price, tx.max_priority_fee_per_gas)
        sender, sender_new, previous = self._state(tx.from_address, block)
        x: dict[str, float] = {
            "log_value": lv,
            "gas_premium": self.base_fee.premium(tx.gas_price),
            "sender_age": math.log10(1.0 + (block - sender.first_block)),
            "sender_idle": math.log10(1.0 + max(block - previous, 0)),
            "sender_new": float(sender_new),
            "first_send": float(sender.n_out == 0),
            "log_gas": math.log10(1.0 + tx.gas),
            "log_gas_price": math.log10(1.0 + tx.gas_price / 1e9),
            "is_call": float(tx.input != "0x"),
            "is_creation": float(tx.to_address is None),
        }
        if tx.receipt_gas_used is not None and tx.gas:
            x["gas_used_ratio"] = tx.receipt_gas_used / tx.gas
        if sender.n_out >= 5:
            std = math.sqrt(sender.lv_m2 / (sender.n_out - 1))
            x["value_z"] = (lv - sender.lv_mean) / std if std > 1e-9 else 0.0
        if sender.received > 0:
            x["share_of_received"] = min(eth / sender.received, 10.0)
        # the sender's own history absorbs this send
        sender.n_out += 1
        delta = lv - sender.lv_mean
        sender.lv_mean += delta / sender.n_out
        sender.lv_m2 += delta * (lv - sender.lv_mean)
        sender.sent += eth
        to = tx.to_address
        recipient_new = to is not None and to not in self.addresses
        out = sender.outbound
        if out is None:
            out = sender.outbound = Counterparties(self.window)
        out.add(block, to or "", eth, recipient_new)
        x["sender_txs_10"] = float(out.count)
        x["fan_out_10"] = float(out.distinct)
        x["new_recipients_10"] = float(out.flagged)
        x["value_out_10"] = math.log10(1.0 + max(out.value, 0.0))
        inbound = sender.inbound
        if inbound is not None:
            inbound.expire(block)
        x["fan_in_10"] = float(inbound.distinct) if inbound is not None else 0.0
        young = block - sender.first_block <= YOUNG_BLOCKS
        sweep = SWEEP_LOW <= x.get("share_of_received", 0.0) <= SWEEP_HIGH
        novelty = (x["first_send"] + recipient_new + (young or sweep)) / 3.0
        x["novel_value"] = lv * novelty
        x["novel_fan_out"] = float(out.flagged) if young else 0.0
        if to is not None:
            x["recipient_new"] = float(recipient_new)
            self._receive(self._state(to, block)[0], tx.from_address, block, eth)
        return x

    def update_transfer(self, tr: TokenTransfer) -> None:
        """A token transfer makes both ends known and counts as a counterparty link."""
        block = tr.block_number
        sender = self._state(tr.from_address, block)[0]
        out = sender.outbound
        if out is None:
            out = sender.outbound = Counterparties(self.window)
        out.add(block, tr.to_address, 0.0)
        self._receive(self._state(tr.to_address, block)[0], tr.from_address, block, 0.0)

    def _receive(self, state: AddressState, sender: str, block: int, eth: float) -> None:
        state.n_in += 1
        state.received += eth
        inbound = state.inbound
        if inbound is None:
            inbound = state.inbound = Counterparties(self.window)
        inbound.add(block, sender, 0.0)
