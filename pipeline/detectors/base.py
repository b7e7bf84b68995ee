"""The detector interface and the alert filter."""

from __future__ import annotations

from typing import Protocol


class Detector(Protocol):
    """A river-style online scorer: high scores mean suspicious."""

    name: str
    version: str

    def learn_one(self, x: dict[str, float]) -> None: ...

    def score_one(self, x: dict[str, float]) -> float: ...


class AlertFilter:
    """Turns scores into alert decisions: a threshold plus a cool-down per subject.

    The cool-down (in blocks) keeps one ongoing incident from raising an alert per event.

    >>> f = AlertFilter(threshold=0.5, cooldown_blocks=10)
    >>> [f.decide("pool", 0.9, b) for b in (1, 5, 12)]
    [True, False, True]
    """

    def __init__(self, threshold: float, cooldown_blocks: int) -> None:
        self.threshold = threshold
        self.cooldown_blocks = cooldown_blocks
        self._last: dict[str, int] = {}

    def decide(self, subject: str, score: float, block: int) -> bool:
        if score < self.threshold:
            return False
        last = self._last.get(subject)
        if last is not None and block - last < self.cooldown_blocks:
            return False
        self._last[subject] = block
        return True
