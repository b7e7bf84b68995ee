"""The campaign interface: a fraud planned up front, then written block by block."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from producers.amm import Pool
    from producers.world import World

ETHER = 10**18
TRANSFER_GAS = 21_000
TOKEN_TRANSFER_GAS = 60_000


class Campaign:
    """Base class: a planned fraud with phases and participants.

    Subclasses plan everything they can in ``__init__`` (drawing only from ``world.rng``), so a
    seed fixes every campaign, and write their records in :meth:`act`.
    """

    type: str = ""

    def __init__(self, campaign_id: str, start_block: int) -> None:
        self.campaign_id = campaign_id
        self.start_block = start_block

    @property
    def duration(self) -> int:
        raise NotImplementedError

    @property
    def end_block(self) -> int:
        """The first block after the campaign (exclusive)."""
        return self.start_block + self.duration

    @property
    def subject(self) -> str:
        """The address the campaign is about: a pool, or a wallet that moves funds."""
        raise NotImplementedError

    def active(self, number: int) -> bool:
        return self.start_block <= number < self.end_block

    def act(self, world: World) -> None:
        """Write this block's records of the campaign (nothing outside its blocks)."""
        raise NotImplementedError

    def truth(self) -> dict[str, Any]:
        raise NotImplementedError

    def _truth(self, participants: Iterable[str], phases: dict[str, int],
               **extra: Any) -> dict[str, Any]:
        """The ground-truth shape every campaign shares, plus its type-specific keys."""
        return {
            "campaign_id": self.campaign_id,
            "type": self.type,
            "subject": self.subject,
            "participants": sorted(participants),
            "start_block": self.start_block,
            "phases": phases,
            "end_block": self.end_block,
            **extra,
        }


CampaignFactory = Callable[[str, int, "World", "Pool", float], Campaign]
