"""A pool's LP-token ledger: who holds its liquidity, how much of it is locked, what the
creator kept.

:class:`LpLedger` folds the LP rows of one pool (DEX events of kind ``mint``, ``burn`` or
``transfer`` whose ``liquidity`` is positive) into exact integer balances:

* a **mint** raises the supply and credits ``to`` (the zero address too: Uniswap V2 mints
  the first :data:`MINIMUM_LIQUIDITY` units of a pool to it, and auto-liquidity tokens mint
  their LP there);
* a **move** (a ``transfer``, or a ``burn`` row of the Transfer kind, whose ``to`` is the zero
  address or the pool) debits ``sender`` and credits ``to``. The pool's own balance is LP in
  flight of a burn (Uniswap's router sends it there first); the pool sending to the zero
  address is the burn proper and lowers the supply. A holder sending to the zero address
  does not (the LP is stuck there for good: locked);
* a **burn** row of the Burn-event kind (``to`` is whoever received the tokens, neither the
  zero address nor the pool: the synthetic chain's, ``sender`` being the router) debits
  ``to`` and lowers the supply.

The *creator* is the recipient of the pool's first mint that is not the zero address or the
pool. *Locked* LP is what :data:`LOCKED_HOLDERS` hold plus what the zero address holds beyond
the first :data:`MINIMUM_LIQUIDITY` units. *Circulating* LP, the denominator of every share,
is the supply less the pool's in-flight balance and those first units: what holders (locked
ones included) hold. The supply, the pool's, the zero address's, the lockers' and the
creator's balances are exact; other holders are kept in at most :data:`MAX_HOLDERS` balances
(pools like WETH/USDC have thousands of LP holders): a credit to a new holder when they are
all taken replaces the smallest one if it is larger, else the new holder goes untracked. A
holder so forgotten counts for nothing in ``lp_holders`` and ``lp_top_share`` (its later
debits change nothing), so with more than 64 holders these two are lower bounds: the 64
largest (roughly) and the creator. Debits never take a balance below 0 (a ledger started
late, or a holder forgotten).

>>> pool, zero, alice = "0x" + "11" * 20, "0x" + "0" * 40, "0x" + "aa" * 20
>>> ledger = LpLedger()
>>> ledger.apply("mint", zero, zero, 1000, pool)  # Uniswap's minimum liquidity, locked
>>> ledger.apply("mint", zero, alice, 9000, pool)
>>> ledger.creator == alice, ledger.features()["lp_creator_share"]
(True, 1.0)
>>> ledger.apply("transfer", alice, DEAD, 4500, pool)
>>> ledger.features()["lp_locked_share"], ledger.features()["lp_creator_removed"]
(0.5, 0.5)
"""

from __future__ import annotations

from typing import Any

from pipeline.records import ZERO_ADDRESS
from pipeline.state import StateError, fields

DEAD = "0x000000000000000000000000000000000000dead"
LOCKED_HOLDERS: frozenset[str] = frozenset({
    DEAD,
    "0x663a5c229c09b049e36dcc11a9b0d4a8eb9db214",  # UNCX (Unicrypt) Uniswap V2 locker
    "0xe2fe530c047f2d85298b07d9333c05737f1435fb",  # Team Finance locker
})
"""Addresses whose LP counts as locked (the dead address and known liquidity lockers).

Configurable by editing this constant: add a locker's address (lowercase) and restart. Keep it
small; every LP row looks an address up in it."""
MINIMUM_LIQUIDITY = 1000
"""LP units Uniswap V2 mints to the zero address at a pool's first mint, locked by design."""
MAX_HOLDERS = 64
"""Balances of ordinary holders kept per pool (besides the creator, the lockers, the zero
address and the pool itself)."""


class LpLedger:
    """LP balances of one pool (see the module docstring), exact ints, bounded."""

    __slots__ = ("balances", "creator", "creator_balance", "creator_peak", "locked",
                 "pool_balance", "supply", "zero_balance")

    def __init__(self) -> None:
        self.supply = 0
        self.pool_balance = 0  # LP sent to the pool: a burn in flight
        self.zero_balance = 0  # LP at the zero address (minimum liquidity, LP "burnt")
        self.locked: dict[str, int] = {}  # LOCKED_HOLDERS address -> balance
        self.creator: str | None = None
        self.creator_balance = 0
        self.creator_peak = 0
        self.balances: dict[str, int] = {}  # other holders, at most MAX_HOLDERS

    def apply(self, kind: str, sender: str | None, to: str | None, amount: int,
              pool: str) -> None:
        """Fold one LP row of ``pool``: ``kind`` mint, burn or transfer of ``amount`` LP."""
        if amount <= 0:
            return
        if kind == "mint":
            if self.creator is None and to is not None and to not in (ZERO_ADDRESS, pool):
                self.creator = to
            self.supply += amount
            self._credit(to, amount, pool)
        elif kind == "burn" and to not in (ZERO_ADDRESS, pool):
            self._debit(to, amount, pool)  # a Burn event: ``to`` redeemed ``amount``
            self.supply = max(self.supply - amount, 0)
        else:
            self._debit(sender, amount, pool)
            if to == ZERO_ADDRESS and sender == pool:
                self.supply = max(self.supply - amount, 0)  # the burn proper
            else:
                self._credit(to, amount, pool)

    def _credit(self, holder: str | None, amount: int, pool: str) -> None:
        if holder is None:
            return  # a mint to nobody said: in the supply, held by no one known
        if holder == ZERO_ADDRESS:
            self.zero_balance += amount
        elif holder == pool:
            self.pool_balance += amount
        elif holder in LOCKED_HOLDERS:
            self.locked[holder] = self.locked.get(holder, 0) + amount
        elif holder == self.creator:
            self.creator_balance += amount
            self.creator_peak = max(self.creator_peak, self.creator_balance)
        elif holder in self.balances:
            self.balances[holder] += amount
        elif len(self.balances) < MAX_HOLDERS:
            self.balances[holder] = amount
        else:
            smallest = min(self.balances.items(), key=lambda kv: (kv[1], kv[0]))
            if amount > smallest[1]:
                del self.balances[smallest[0]]
                self.balances[holder] = amount

    def _debit(self, holder: str | None, amount: int, pool: str) -> None:
        if holder is None or holder == ZERO_ADDRESS:
            return
        if holder == pool:
            self.pool_balance = max(self.pool_balance - amount, 0)
        elif holder in LOCKED_HOLDERS:
            left = self.locked.get(holder, 0) - amount
            if left > 0:
                self.locked[holder] = left
            else:
                self.locked.pop(holder, None)
        elif holder == self.creator:
            self.creator_balance = max(self.creator_balance - amount, 0)
        elif holder in self.balances:
            left = self.balances[holder] - amount
            if left > 0:
                self.balances[holder] = left
            else:
                del self.balances[holder]

    @property
    def circulating(self) -> int:
        """LP in holders' hands, locked ones included (the shares' denominator)."""
        return max(self.supply - self.pool_balance
                   - min(self.zero_balance, MINIMUM_LIQUIDITY), 0)

    @property
    def locked_total(self) -> int:
        return sum(self.locked.values()) + max(self.zero_balance - MINIMUM_LIQUIDITY, 0)

    def features(self) -> dict[str, float]:
        """``lp_holders``, ``lp_creator_share``, ``lp_top_share``, ``lp_locked_share``,
        ``lp_creator_removed``; empty before the creator is known."""
        if self.creator is None:
            return {}
        circulating, creator = self.circulating, self.creator_balance
        top = max(max(self.balances.values(), default=0), creator)

        def share(amount: int) -> float:
            return min(amount / circulating, 1.0) if circulating else 0.0

        return {
            "lp_holders": float(len(self.balances) + (creator > 0)),
            "lp_creator_share": share(creator),
            "lp_top_share": share(top),
            "lp_locked_share": share(self.locked_total),
            "lp_creator_removed": 1.0 - creator / self.creator_peak if self.creator_peak
            else 0.0,
        }

    def state(self) -> dict[str, Any]:
        """Every balance, exact; holders sorted by address."""
        return {"v": 1, "supply": self.supply, "pool_balance": self.pool_balance,
                "zero_balance": self.zero_balance, "creator": self.creator,
                "creator_balance": self.creator_balance, "creator_peak": self.creator_peak,
                "locked": [[a, b] for a, b in sorted(self.locked.items())],
                "balances": [[a, b] for a, b in sorted(self.balances.items())]}

    def load_state(self, state: dict[str, Any]) -> None:
        fields(state, "lp ledger", 1, supply=int, pool_balance=int, zero_balance=int,
               creator=(str, type(None)), creator_balance=int, creator_peak=int, locked=list,
               balances=list)
        try:
            locked = {str(a): int(b) for a, b in state["locked"]}
            balances = {str(a): int(b) for a, b in state["balances"]}
        except (TypeError, ValueError) as exc:
            raise StateError(f"lp ledger state does not fit: {exc}") from exc
        if len(balances) > MAX_HOLDERS or not set(locked) <= LOCKED_HOLDERS:
            raise StateError(f"lp ledger state: {len(balances)} holders (at most "
                             f"{MAX_HOLDERS}) or a locker not in LOCKED_HOLDERS")
        self.supply, self.pool_balance = state["supply"], state["pool_balance"]
        self.zero_balance, self.creator = state["zero_balance"], state["creator"]
        self.creator_balance, self.creator_peak = (state["creator_balance"],
                                                   state["creator_peak"])
        self.locked, self.balances = locked, balances
