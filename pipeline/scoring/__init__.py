"""Kafka-free scoring: one partition's :class:`Scorer`, built from per-topic parts.

The service interleaves the transactions, DEX and labels topics of a partition arbitrarily,
while alerts must be the same in every replay. So the state is split by topic and the parts
never read each other:

* :class:`DexScoring` — pool features; pump-and-dump, rug-pull and wash-trading detectors;
  drift on their scores. Its alerts depend only on the DEX events' order.
* :class:`TransactionScoring` — address features; the anomaly detector; drift on its scores;
  the supervised model, trained by labels, which scores but never alerts. Its alerts depend
  only on the order of transactions and token transfers.
"""

from pipeline.scoring.common import DriftWatch
from pipeline.scoring.dex import DexScoring
from pipeline.scoring.scorer import Scorer
from pipeline.scoring.transactions import TransactionScoring

__all__ = ["DexScoring", "DriftWatch", "Scorer", "TransactionScoring"]
