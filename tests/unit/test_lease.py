"""The lease's assignor (no broker): the holder keeps the lease whoever joins; without one,
one member gets it; a later claim wins over an earlier one; a claim it cannot read is none."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from kafka.coordinator.assignors.abstract import ConsumerProtocolSubscription

from pipeline.lease import LeaseAssignor, LeaseConfig


def candidate(held: bool, generation: int = -1) -> Any:
    return SimpleNamespace(held=held, generation=generation,
                           config=LeaseConfig(group="g", topic="chainwatch.audit"))


def member(member_id: str, held: bool = False, generation: int = -1) -> Any:
    metadata = LeaseAssignor(candidate(held, generation)).metadata({"chainwatch.audit"})
    return SimpleNamespace(member_id=member_id, group_instance_id=None,
                           metadata=ConsumerProtocolSubscription.decode(metadata.encode()))


def owner(*members: Any) -> list[str]:
    assignment = LeaseAssignor(candidate(False)).assign(None, list(members))
    return [m for m, a in sorted(assignment.items()) if a.partitions()]


def test_the_holder_keeps_the_lease_whoever_joins() -> None:
    assert owner(member("a"), member("b", held=True, generation=3), member("c")) == ["b"]


def test_without_a_holder_one_member_gets_it() -> None:
    assert owner(member("c"), member("a"), member("b")) == ["a"]
    assert owner(member("z")) == ["z"]


def test_of_two_claims_the_later_one_wins() -> None:
    assert owner(member("a", held=True, generation=2), member("b", held=True, generation=5),
                 member("c")) == ["b"]


def test_a_foreign_or_garbled_claim_counts_as_none() -> None:
    garbled = member("a")
    garbled.metadata = ConsumerProtocolSubscription(0, ["chainwatch.audit"],
                                                    b"chainwatch-lease-1\n{not json")
    assert owner(garbled, member("b")) == ["a"]  # no claim anywhere: the smallest id
