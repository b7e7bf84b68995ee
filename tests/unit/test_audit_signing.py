"""Signed tree heads and keys: the key file is private, a head verifies with the public key
alone, and any change to a head breaks it."""

from __future__ import annotations

import dataclasses
import os
import stat
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.audit import AuditKeyError, SignedHead, Signer, load_public_key, verify_head
from pipeline.audit.errors import AuditError
from pipeline.audit.signing import HEAD_CONTEXT

ROOT, PREV = bytes(range(32)), bytes(range(32, 64))


@pytest.fixture
def signer() -> Signer:
    return Signer.generate()


def test_first_use_makes_a_private_key_file_readable_by_its_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "audit.key"
    old = os.umask(0o022)
    try:
        made = Signer.load_or_create(path)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text().startswith("-----BEGIN PRIVATE KEY-----")
    public = Path(f"{path}.pub")
    assert public.read_text().startswith("-----BEGIN PUBLIC KEY-----")
    assert load_public_key(public) == made.public_key
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]
    again = Signer.load_or_create(path)  # the same key, not a new one
    assert again.public_hex() == made.public_hex()
    assert made.public_hex() in repr(made) and "PRIVATE" not in repr(made)


def test_a_key_file_others_can_read_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "audit.key"
    Signer.load_or_create(path)
    path.chmod(0o644)
    with pytest.raises(AuditKeyError, match="chmod 600"):
        Signer.load(path)
    path.chmod(0o600)
    path.write_text("not a key")
    with pytest.raises(AuditKeyError, match="cannot read"):
        Signer.load(path)
    with pytest.raises(AuditKeyError):
        Signer.load(tmp_path / "missing.key")


def test_a_head_verifies_with_the_public_key_alone_in_every_form(signer: Signer,
                                                                 tmp_path: Path) -> None:
    head = signer.sign_head(size=10, root=ROOT, prev=PREV, timestamp_ms=1_700_000_000_000)
    pem_file = tmp_path / "log.pub"
    pem_file.write_text(signer.public_pem())
    raw = bytes.fromhex(signer.public_hex())
    for key in (signer.public_key, signer.public_hex(), signer.public_hex().upper(),
                signer.public_pem(), signer.public_pem().encode(), raw, pem_file):
        assert verify_head(key, head), key
    assert not verify_head(Signer.generate().public_key, head)


@pytest.mark.parametrize("change", [
    {"size": 11}, {"root": PREV}, {"prev": ROOT}, {"timestamp_ms": 1_700_000_000_001},
    {"signature": bytes(64)}])
def test_any_change_to_a_head_breaks_its_signature(signer: Signer,
                                                   change: dict[str, object]) -> None:
    head = signer.sign_head(size=10, root=ROOT, prev=PREV, timestamp_ms=1_700_000_000_000)
    assert not verify_head(signer.public_key,
                           dataclasses.replace(head, **change))  # type: ignore[arg-type]


@settings(max_examples=200, deadline=None)
@given(bit=st.integers(0, (len(HEAD_CONTEXT) + 80 + 64) * 8 - 1))
def test_any_flipped_bit_of_a_published_head_breaks_it(bit: int) -> None:
    signer = Signer.generate()
    data = bytearray(signer.sign_head(3, ROOT, PREV, 5).to_bytes())
    data[bit // 8] ^= 1 << (bit % 8)
    try:
        head = SignedHead.from_bytes(bytes(data))
    except AuditError:
        return  # the context changed: not a head at all
    assert not verify_head(signer.public_key, head)


def test_heads_round_trip_and_chain(signer: Signer) -> None:
    first = signer.sign_head(1, ROOT, bytes(32), 5)
    second = signer.sign_head(2, PREV, first.hash(), 6)
    for head in (first, second):
        assert SignedHead.from_json(head.to_json()) == head
        assert SignedHead.from_bytes(head.to_bytes()) == head
    assert second.prev == first.hash() != second.hash()
    assert len(first.to_bytes()) == len(HEAD_CONTEXT) + 8 + 32 + 32 + 8 + 64
    assert "size=2" in repr(second)


@pytest.mark.parametrize("data", [
    b"", b"{}", b"[]", b'{"size": 1}',
    b'{"size": 1, "root": "00", "prev": "00", "timestamp_ms": 1, "signature": "00"}',
    b'{"size": -1, "root": "' + b"00" * 32 + b'", "prev": "' + b"00" * 32
    + b'", "timestamp_ms": 1, "signature": "' + b"00" * 64 + b'"}',
    b'{"size": 1, "root": "zz", "prev": "00", "timestamp_ms": 1, "signature": "00"}',
])
def test_malformed_heads_are_refused(data: bytes) -> None:
    with pytest.raises(AuditError):
        SignedHead.from_json(data)


def test_signing_refuses_impossible_heads(signer: Signer) -> None:
    with pytest.raises(AuditError):
        signer.sign_head(-1, ROOT, PREV, 0)
    with pytest.raises(AuditError):
        signer.sign_head(1, ROOT[:31], PREV, 0)


keys = st.none() | st.integers() | st.text(max_size=70) | st.binary(max_size=70) \
    | st.just("00" * 32) | st.just(b"\x01" * 32)


@settings(max_examples=200, deadline=None)
@given(key=keys, size=st.integers(-5, 2**65) | st.booleans() | st.none(),
       root=st.binary(max_size=40), signature=st.binary(max_size=80))
def test_verify_head_never_raises(key: object, size: object, root: bytes,
                                  signature: bytes) -> None:
    head = SignedHead(size, root, PREV, 1, signature)  # type: ignore[arg-type]
    assert verify_head(key, head) is False  # type: ignore[arg-type]
    assert verify_head(key, "head") is False  # type: ignore[arg-type]


def test_load_public_key_says_what_it_wants() -> None:
    for bad in ("", "zz" * 32, b"\x00" * 31, "-----BEGIN PUBLIC KEY-----\nAAAA\n", 42):
        with pytest.raises(AuditKeyError, match="64 hex"):
            load_public_key(bad)  # type: ignore[arg-type]
