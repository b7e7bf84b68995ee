"""The detector interface, and the filters that turn scores into alert decisions.

A detector scores; it never decides. :class:`ThresholdFilter` (a fixed threshold) and
:class:`QuantileFilter` (a running quantile of recent scores) decide, each with a
:class:`Cooldown` per subject so that one ongoing incident raises one alert, not one per event.
The scorer learns a detector only from events its filter did not flag, so outliers never
become the norm.

The filters and the cool-down are state: each saves it with ``state()`` as plain data and
takes it back with ``load_state`` (:mod:`pipeline.state`); their constructor arguments are
configuration, never saved.
"""

from __future__ import annotations

import copy
import inspect
from collections import OrderedDict, deque
from typing import Any, Protocol, TypeVar, runtime_checkable

from river import stats

from pipeline.state import StateError, fields


def ramp(value: float, low: float, high: float) -> float:
    """A saturating signal: 0 at or below ``low``, 1 at or above ``high``, linear between.

    >>> ramp(0.1, 0.0, 0.2), ramp(5.0, 0.0, 0.2), ramp(-1.0, 0.0, 0.2)
    (0.5, 1.0, 0.0)
    """
    if value <= low:
        return 0.0
    if value >= high:
        return 1.0
    return (value - low) / (high - low)


@runtime_checkable
class Detector(Protocol):
    """A river-style online scorer: ``score_one`` is pure, high means suspicious.

    Constructor arguments are the whole configuration and are stored verbatim as attributes
    of the same name, so ``type(d)(**d.params())`` builds an unfitted copy.
    """

    name: str
    version: str

    def learn_one(self, x: dict[str, float]) -> None: ...

    def score_one(self, x: dict[str, float]) -> float: ...

    def params(self) -> dict[str, Any]: ...


class Cooldown:
    """At most one alert per subject every ``blocks`` blocks, in bounded memory.

    Subjects are kept in the order they last alerted; any older than ``blocks`` can never
    block an alert again and are dropped, so memory follows the alert rate, not the key count.

    >>> c = Cooldown(10)
    >>> [c.allow("pool", b) for b in (1, 5, 11, 12)]
    [True, False, True, False]
    """

    def __init__(self, blocks: int) -> None:
        self.blocks = blocks
        self._last: OrderedDict[str, int] = OrderedDict()

    def allow(self, subject: str, block: int) -> bool:
        last = self._last
        while last:
            oldest = next(iter(last.values()))
            if block - oldest < self.blocks:
                break
            last.popitem(last=False)
        previous = last.get(subject)
        if previous is not None and block - previous < self.blocks:
            return False
        last[subject] = block
        last.move_to_end(subject)
        return True

    def state(self) -> dict[str, Any]:
        """The subjects that may still block an alert, in the order they last alerted."""
        return {"v": 1, "last": [[subject, block] for subject, block in self._last.items()]}

    def load_state(self, state: dict[str, Any]) -> None:
        fields(state, "cooldown", 1, last=list)
        try:
            self._last = OrderedDict((str(s), int(b)) for s, b in state["last"])
        except (TypeError, ValueError) as exc:
            raise StateError(f"cooldown state does not fit: {exc}") from exc

    def __len__(self) -> int:
        return len(self._last)


class ThresholdFilter:
    """Alert when ``score >= threshold`` and the subject's cool-down has passed.

    >>> f = ThresholdFilter(threshold=0.5, cooldown_blocks=10)
    >>> [f.decide("pool", s, b) for s, b in ((0.9, 1), (0.9, 5), (0.2, 12), (0.6, 13))]
    [True, False, False, True]
    """

    def __init__(self, threshold: float, cooldown_blocks: int) -> None:
        self.threshold = threshold
        self.cooldown_blocks = cooldown_blocks
        self.cooldown = Cooldown(cooldown_blocks)

    def crosses(self, score: float) -> bool:
        return score >= self.threshold

    def decide(self, subject: str, score: float, block: int) -> bool:
        return score >= self.threshold and self.cooldown.allow(subject, block)

    def state(self) -> dict[str, Any]:
        return {"v": 1, "cooldown": self.cooldown.state()}

    def load_state(self, state: dict[str, Any]) -> None:
        fields(state, "threshold filter", 1, cooldown=dict)
        self.cooldown.load_state(state["cooldown"])


class QuantileFilter:
    """Flag a score at or above the ``q`` quantile of the last ``window`` scores.

    The quantile is exact over the window (river's ``RollingQuantile``), so ties at the top of
    a saturating score are handled; nothing is flagged before ``warmup`` scores were seen.
    :meth:`flags` updates the window and says whether the score is an outlier (the caller then
    skips learning it); :meth:`decide` adds the per-subject cool-down for alerting.

    River's quantile keeps its window out of reach, so the filter keeps a copy of the last
    ``window`` scores: :meth:`state` saves them and :meth:`load_state` rebuilds the quantile
    by feeding them again, in order.

    >>> f = QuantileFilter(q=0.9, window=100, warmup=50, cooldown_blocks=10)
    >>> sum(f.flags((i * 37 % 100) / 100) for i in range(100)) <= 10
    True
    >>> f.flags(5.0), f.flags(0.1), round(f.threshold, 2)
    (True, False, 0.9)
    """

    def __init__(self, q: float, window: int, warmup: int, cooldown_blocks: int) -> None:
        self.q = q
        self.window = window
        self.warmup = warmup
        self.cooldown_blocks = cooldown_blocks
        self.cooldown = Cooldown(cooldown_blocks)
        self.quantile = stats.RollingQuantile(q, window)
        self.recent: deque[float] = deque(maxlen=window)  # the quantile's window, for state()
        self.seen = 0
        self.threshold = float("inf")

    def flags(self, score: float) -> bool:
        """Is ``score`` an outlier against the scores before it? (Then it joins them.)"""
        cut = self.quantile.get() if self.seen >= self.warmup else None
        self.quantile.update(score)
        self.recent.append(score)
        self.seen += 1
        if cut is None:
            return False
        self.threshold = float(cut)
        return score >= cut and score > 0.0

    def decide(self, subject: str, block: int) -> bool:
        return self.cooldown.allow(subject, block)

    def state(self) -> dict[str, Any]:
        return {"v": 1, "recent": list(self.recent), "seen": self.seen,
                "threshold": self.threshold, "cooldown": self.cooldown.state()}

    def load_state(self, state: dict[str, Any]) -> None:
        fields(state, "quantile filter", 1, recent=list, seen=int, threshold=float,
               cooldown=dict)
        recent = state["recent"]
        if len(recent) > self.window or not all(isinstance(x, float | int) for x in recent):
            raise StateError(f"quantile filter state: expected at most {self.window} scores")
        quantile = stats.RollingQuantile(self.q, self.window)
        for score in recent:
            quantile.update(float(score))
        self.cooldown.load_state(state["cooldown"])
        self.quantile, self.recent = quantile, deque(map(float, recent), maxlen=self.window)
        self.seen, self.threshold = state["seen"], float(state["threshold"])


class Configurable:
    """Constructor arguments are the configuration: :meth:`params` returns them verbatim.

    >>> class Demo(Configurable):
    ...     def __init__(self, a: int = 1, seed: int = 42) -> None:
    ...         self.a, self.seed = a, seed
    >>> Demo(a=3).params(), clone(Demo(a=3)).params() == Demo(a=3).params()
    ({'a': 3, 'seed': 42}, True)
    """

    def params(self) -> dict[str, Any]:
        names = inspect.signature(type(self).__init__).parameters
        return {name: getattr(self, name) for name in names if name != "self"}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}({args})"


T = TypeVar("T", bound=Configurable)


def clone(model: T) -> T:
    """A fresh, unfitted model with the same configuration (river's ``clone``)."""
    return type(model)(**copy.deepcopy(model.params()))
