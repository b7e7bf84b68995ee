"""One writer at a time, checked at each commit: a fence that says no rolls the batch back,
and a writer whose log another process wrote to since it opened it appends nothing (leaves,
offsets or seal) until it opens the log again."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.audit import AuditLog, AuditReader, Leaf, Signer, verify_store
from pipeline.audit.errors import LogChanged, WriterFenced
from pipeline.checkpoints import CheckpointRef

SIGNER = Signer.generate()
ALERTS = "chainwatch.alerts"


def leaf(i: int) -> Leaf:
    sha = f"{i + 1:064x}"
    return Leaf.from_checkpoint(CheckpointRef(
        uri=f"file:///c/g/p0000/{i + 1:012d}-{sha}.ckpt", group="g", task="p0000", seq=i + 1,
        sha256=sha, size=1, created_at=1_700_000_000_000, meta={}))


class Fence:
    """A fence that answers ``allow`` and counts the commits it let through."""

    def __init__(self) -> None:
        self.allow = True
        self.asked = 0

    @contextlib.contextmanager
    def __call__(self) -> Iterator[bool]:
        self.asked += 1
        yield self.allow


def test_a_fence_that_says_no_rolls_the_batch_back(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    fence = Fence()
    with AuditLog.open(path, SIGNER, fence=fence) as log:
        log.append([leaf(0), leaf(1)], {(ALERTS, 0): 2})
        fence.allow = False
        with pytest.raises(WriterFenced, match="lease is lost or could not be confirmed"):
            log.append([leaf(2)], {(ALERTS, 0): 3})
        assert log.size == 2 and fence.asked == 2
        log.discard()  # what a fenced writer does: no flush, no seal
    with AuditReader.open(path) as reader:
        assert reader.size == 2 and reader.offsets() == {(ALERTS, 0): 2}
    result = verify_store(path, public_key=SIGNER.public_key)
    assert result.ok and not result.sealed


@pytest.mark.parametrize("other_writes", ["leaves", "offsets only", "a seal"])
def test_a_writer_appends_nothing_after_another_wrote(tmp_path: Path, other_writes: str) -> None:
    path = tmp_path / "audit.db"
    with AuditLog.open(path, SIGNER) as first:
        first.append([leaf(0)], {(ALERTS, 0): 1})
    zombie = AuditLog.open(path, SIGNER)  # believes it is still the writer
    with AuditLog.open(path, SIGNER) as taker:
        if other_writes == "leaves":
            taker.append([leaf(1)], {(ALERTS, 0): 2})
        elif other_writes == "offsets only":  # the leaf count alone would not tell
            taker.append([], {(ALERTS, 0): 5})
        else:
            assert taker.seal() is not None
    with pytest.raises(LogChanged, match="another process wrote"):
        zombie.append([leaf(9)], {(ALERTS, 0): 1})
    with pytest.raises(LogChanged):
        zombie.seal()
    zombie.close()  # does not seal over the other writer's file, does not raise
    with AuditReader.open(path) as reader:
        assert reader.index_of(leaf(9).id) is None
        assert reader.offsets()[(ALERTS, 0)] == {"leaves": 2, "offsets only": 5,
                                                 "a seal": 1}[other_writes]
    assert verify_store(path, public_key=SIGNER.public_key).ok
    with AuditLog.open(path, SIGNER) as again:  # opened again, it appends on top
        again.append([leaf(9)], {(ALERTS, 0): 9})
        assert again.index_of(leaf(9).id) == again.size - 1
