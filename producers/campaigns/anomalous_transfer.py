"""Anomalous transfers: a dormant wallet wakes up, a fan-out, or a peel chain of fresh hops."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from producers.campaigns.base import ETHER, TRANSFER_GAS, Campaign

if TYPE_CHECKING:
    from producers.amm import Pool
    from producers.world import World

PATTERNS = ("dormant", "fan_out", "peel_chain")
BACKGROUND_MEDIAN_ETH = 0.3
"""Median value of the background ETH transfers (lognormal, sigma 1.8) of the synthetic chain."""


class AnomalousTransfer(Campaign):
    """A fresh wallet is funded with a large amount, then moves it in one of three patterns.

    * ``dormant``: it sits untouched for a long stretch, then moves almost all of it at once;
    * ``fan_out``: a few blocks later it splits the value over many fresh wallets;
    * ``peel_chain``: a few blocks later the value hops from fresh wallet to fresh wallet, one
      hop a block, each hop peeling a small part off to another fresh wallet.

    Phases: ``fund`` (start) → ``move`` (the first outflow) → ``fan_out_end`` / ``peel_end``.
    The subject is the funded wallet; the ``pool`` it is given is ignored. ``difficulty``
    lowers the value relative to background transfers (from ~1,800x their median down to
    ~12x), shortens a dormancy, spreads a fan-out over fewer recipients and more blocks, and
    peels more off each hop.
    """

    type = "anomalous_transfer"

    def __init__(self, campaign_id: str, start_block: int, world: World, pool: Pool,
                 difficulty: float) -> None:
        super().__init__(campaign_id, start_block)
        rng = world.rng
        loud = 1.0 - difficulty
        self.pattern = rng.choice(PATTERNS)
        self.funder = world.pick_wallet()
        self.origin = world.fresh_wallet(campaign_id + "/origin")
        self.value = int(ETHER * BACKGROUND_MEDIAN_ETH * math.exp(2.5 + 5 * loud)
                         * rng.lognormvariate(0, 0.3))
        self.recipients: list[str] = []
        self.hops: list[str] = []
        self.peels: list[str] = []
        self._sends: dict[int, list[tuple[str, str, int]]] = {
            0: [(self.funder, self.origin, self.value)]}
        if self.pattern == "dormant":
            dormancy = rng.randint(20, 40) + int(80 * loud)
            run_left = world.config.start_block + world.config.blocks - 1 - start_block
            self.move_offset = max(1, min(dormancy, run_left))  # wake up before the run ends
            self.recipients = [world.fresh_wallet(campaign_id + "/dest")]
            self._send(self.move_offset, self.origin, self.recipients[0],
                       int(self.value * rng.uniform(0.9, 0.99)))
        elif self.pattern == "fan_out":
            self.move_offset = rng.randint(1, 3)
            self._plan_fan_out(world, difficulty)
        else:
            self.move_offset = rng.randint(1, 3)
            self._plan_peel_chain(world, difficulty)
        self.last_offset = max(self._sends)

    def _send(self, offset: int, sender: str, to: str, value: int) -> None:
        self._sends.setdefault(offset, []).append((sender, to, value))

    def _plan_fan_out(self, world: World, difficulty: float) -> None:
        rng = world.rng
        count = rng.randint(8, 15) + int(40 * (1.0 - difficulty))
        spread = 1 + int(rng.uniform(0, 6) * difficulty)  # blocks the fan-out takes
        self.recipients = [world.fresh_wallet(self.campaign_id + "/fan")
                           for _ in range(count)]
        weights = [rng.lognormvariate(0, 0.2 + 0.8 * difficulty) for _ in self.recipients]
        total = sum(weights)
        for i, (to, weight) in enumerate(zip(self.recipients, weights, strict=True)):
            self._send(self.move_offset + i * spread // count, self.origin, to,
                       int(self.value * 0.98 * weight / total))

    def _plan_peel_chain(self, world: World, difficulty: float) -> None:
        rng = world.rng
        holder, amount = self.origin, int(self.value * 0.99)
        for step in range(rng.randint(6, 10) + int(8 * (1.0 - difficulty))):
            hop = world.fresh_wallet(self.campaign_id + "/hop")
            peel = world.fresh_wallet(self.campaign_id + "/peel")
            forward = int(amount * (rng.uniform(0.9, 0.98) - 0.15 * difficulty))
            self._send(self.move_offset + step, holder, hop, forward)
            self._send(self.move_offset + step, holder, peel, amount - forward)
            self.hops.append(hop)
            self.peels.append(peel)
            holder, amount = hop, forward

    @property
    def duration(self) -> int:
        return self.last_offset + 1

    @property
    def subject(self) -> str:
        return self.origin

    def act(self, world: World) -> None:
        for sender, to, value in self._sends.get(world.block.number - self.start_block, []):
            world.transaction(sender, to, value, TRANSFER_GAS)

    def truth(self) -> dict[str, Any]:
        phases = {"fund": self.start_block, "move": self.start_block + self.move_offset}
        extra: dict[str, Any] = {"pattern": self.pattern, "value": self.value,
                                 "funder": self.funder}
        if self.pattern == "peel_chain":
            phases["peel_end"] = self.start_block + self.last_offset
            extra |= {"hops": list(self.hops), "peels": sorted(self.peels)}
        else:
            extra["recipients"] = sorted(self.recipients)
            if self.pattern == "fan_out":
                phases["fan_out_end"] = self.start_block + self.last_offset
        return self._truth([self.origin, *self.recipients, *self.hops, *self.peels], phases,
                           **extra)
