"""The Merkle tree and its proofs: RFC 6962 / 9162 known vectors, a straight-from-the-RFC
reference, every proof up to 64 leaves, bit flips, and garbage that must never raise."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.audit import (
    EMPTY_ROOT,
    CompactRange,
    ConsistencyProof,
    InclusionProof,
    Signer,
    leaf_hash,
    node_hash,
    root_of,
    verify_consistency,
    verify_consistency_path,
    verify_inclusion,
    verify_inclusion_path,
)
from pipeline.audit.errors import AuditError, ProofError
from pipeline.audit.merkle import decompose, split_point
from pipeline.audit.proofs import HashList, consistency_path, inclusion_path

# The leaves and roots of transparency-dev/merkle testonly/constants.go (RFC 6962 hashing),
# the inclusion and consistency vectors of its proof/verify_test.go.
LEAVES = [bytes.fromhex(h) for h in ("", "00", "10", "2021", "3031", "40414243",
                                     "5051525354555657", "606162636465666768696a6b6c6d6e6f")]
ROOTS = [bytes.fromhex(h) for h in (
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
)]
H = {name: bytes.fromhex(h) for name, h in {
    "l0": "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "l1": "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
    "l4": "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
    "l6": "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
    "n01": "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "n23": "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
    "n45": "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
    "n67": "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
    "n0123": "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "n4567": "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
}.items()}
INCLUSION_VECTORS = [  # (leaf index, tree size, path)
    (0, 8, [H["l1"], H["n23"], H["n4567"]]),
    (5, 8, [H["l4"], H["n67"], H["n0123"]]),
    (2, 3, [H["n01"]]),
    (1, 5, [H["l0"], H["n23"], H["l4"]]),
]
CONSISTENCY_VECTORS = [  # (old size, new size, path)
    (1, 1, []),
    (1, 8, [H["l1"], H["n23"], H["n4567"]]),
    (6, 8, [H["n45"], H["n67"], H["n0123"]]),
    (2, 5, [H["n23"], H["l4"]]),
    (6, 7, [H["n45"], H["l6"], H["n0123"]]),
]
HASHES = [leaf_hash(d) for d in LEAVES]


# -- a reference straight from the RFC's recursive definitions ------------------------------

def ref_mth(hashes: list[bytes]) -> bytes:
    if not hashes:
        return hashlib.sha256(b"").digest()
    if len(hashes) == 1:
        return hashes[0]
    k = 1
    while k * 2 < len(hashes):
        k *= 2
    return node_hash(ref_mth(hashes[:k]), ref_mth(hashes[k:]))


def ref_path(m: int, hashes: list[bytes]) -> list[bytes]:
    if len(hashes) == 1:
        return []
    k = split_point(len(hashes))
    if m < k:
        return [*ref_path(m, hashes[:k]), ref_mth(hashes[k:])]
    return [*ref_path(m - k, hashes[k:]), ref_mth(hashes[:k])]


def ref_subproof(m: int, hashes: list[bytes], whole: bool) -> list[bytes]:
    n = len(hashes)
    if m == n:
        return [] if whole else [ref_mth(hashes)]
    k = split_point(n)
    if m <= k:
        return [*ref_subproof(m, hashes[:k], whole), ref_mth(hashes[k:])]
    return [*ref_subproof(m - k, hashes[k:], False), ref_mth(hashes[:k])]


def tree(n: int) -> list[bytes]:
    return [leaf_hash(i.to_bytes(2, "big")) for i in range(n)]


def flip(data: bytes, bit: int) -> bytes:
    bit %= 8 * len(data)
    out = bytearray(data)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


# -- known vectors -----------------------------------------------------------------------

def test_rfc6962_roots_of_every_prefix() -> None:
    assert EMPTY_ROOT == ROOTS[0] == hashlib.sha256(b"").digest()
    for size in range(len(LEAVES) + 1):
        assert root_of(HASHES[:size]) == ROOTS[size], size
        assert ref_mth(HASHES[:size]) == ROOTS[size], size


def test_rfc6962_hash_prefixes() -> None:
    assert leaf_hash(b"") == hashlib.sha256(b"\x00").digest() == H["l0"]
    assert node_hash(H["l0"], H["l1"]) == hashlib.sha256(b"\x01" + H["l0"] + H["l1"]).digest()
    assert node_hash(H["l0"], H["l1"]) == H["n01"]


@pytest.mark.parametrize(("index", "size", "path"), INCLUSION_VECTORS)
def test_known_inclusion_proofs(index: int, size: int, path: list[bytes]) -> None:
    assert list(inclusion_path(HashList(HASHES[:size]), index, size)) == path
    assert verify_inclusion_path(HASHES[index], index, size, path, ROOTS[size])


@pytest.mark.parametrize(("old", "new", "path"), CONSISTENCY_VECTORS)
def test_known_consistency_proofs(old: int, new: int, path: list[bytes]) -> None:
    assert list(consistency_path(HashList(HASHES[:new]), old, new)) == path
    assert verify_consistency_path(old, new, path, ROOTS[old], ROOTS[new])


def test_trivial_consistency() -> None:
    assert verify_consistency_path(0, 0, [], EMPTY_ROOT, EMPTY_ROOT)
    assert verify_consistency_path(0, 5, [], EMPTY_ROOT, ROOTS[5])
    assert verify_consistency_path(3, 3, [], ROOTS[3], ROOTS[3])
    assert not verify_consistency_path(3, 3, [], ROOTS[3], ROOTS[4])
    assert not verify_consistency_path(0, 5, [], ROOTS[1], ROOTS[5])  # not the empty root
    assert not verify_consistency_path(3, 3, [ROOTS[3]], ROOTS[3], ROOTS[3])  # no path allowed
    assert not verify_consistency_path(4, 3, [], ROOTS[4], ROOTS[3])  # time travel
    assert not verify_consistency_path(1, 2, [], ROOTS[1], ROOTS[2])  # proof missing


# -- every proof up to 64 leaves -----------------------------------------------------------

def test_every_inclusion_proof_up_to_64_leaves() -> None:
    hashes = tree(64)
    for size in range(1, 65):
        source, root = HashList(hashes[:size]), ref_mth(hashes[:size])
        for index in range(size):
            path = inclusion_path(source, index, size)
            assert list(path) == ref_path(index, hashes[:size]), (index, size)
            assert verify_inclusion_path(hashes[index], index, size, path, root)
            assert len(path) <= (size - 1).bit_length()


def test_every_consistency_proof_up_to_64_leaves() -> None:
    hashes = tree(64)
    roots = [ref_mth(hashes[:n]) for n in range(65)]
    for new in range(65):
        source = HashList(hashes[:new])
        for old in range(new + 1):
            path = consistency_path(source, old, new)
            expected = ref_subproof(old, hashes[:new], True) if 0 < old < new else []
            assert list(path) == expected, (old, new)
            assert verify_consistency_path(old, new, path, roots[old], roots[new]), (old, new)
            assert len(path) <= new.bit_length() + 1


def test_compact_range_grows_like_the_reference() -> None:
    hashes = tree(70)
    grown = CompactRange()
    completed: list[tuple[int, int, bytes]] = []
    for n, h in enumerate(hashes, start=1):
        grown.append(h, completed)
        assert grown.root() == ref_mth(hashes[:n])
        rebuilt = CompactRange(n, [HashList(hashes)(level, index)
                                   for level, index in decompose(0, n)])
        assert rebuilt.root() == grown.root()
    source = HashList(hashes)
    assert completed and all(h == source(level, index) for level, index, h in completed)
    assert len(completed) == 70 - (70).bit_count()  # one per merge
    with pytest.raises(ValueError, match="perfect subtrees"):
        CompactRange(3, [EMPTY_ROOT])


def test_proof_requests_out_of_range_raise_proof_error() -> None:
    source = HashList(tree(4))
    for index, size in ((4, 4), (-1, 4), (0, 0)):
        with pytest.raises(ProofError):
            inclusion_path(source, index, size)
    with pytest.raises(ProofError):
        consistency_path(source, 5, 4)


# -- bit flips -----------------------------------------------------------------------------

sizes = st.integers(min_value=1, max_value=64)


@settings(max_examples=400, deadline=None)
@given(size=sizes, data=st.data())
def test_any_flipped_bit_breaks_an_inclusion_proof(size: int, data: st.DataObject) -> None:
    hashes = tree(size)
    index = data.draw(st.integers(0, size - 1))
    path = list(inclusion_path(HashList(hashes), index, size))
    root = ref_mth(hashes)
    bit = data.draw(st.integers(0, 2**20))
    where = data.draw(st.sampled_from(["leaf", "root", "path"] if path else ["leaf", "root"]))
    leaf = hashes[index]
    if where == "leaf":
        leaf = flip(leaf, bit)
    elif where == "root":
        root = flip(root, bit)
    else:
        at = data.draw(st.integers(0, len(path) - 1))
        path[at] = flip(path[at], bit)
    assert not verify_inclusion_path(leaf, index, size, path, root)


@settings(max_examples=400, deadline=None)
@given(new=st.integers(min_value=2, max_value=64), data=st.data())
def test_any_flipped_bit_breaks_a_consistency_proof(new: int, data: st.DataObject) -> None:
    hashes = tree(new)
    old = data.draw(st.integers(1, new))
    path = list(consistency_path(HashList(hashes), old, new))
    old_root, new_root = ref_mth(hashes[:old]), ref_mth(hashes)
    bit = data.draw(st.integers(0, 2**20))
    where = data.draw(st.sampled_from(["old", "new", "path"] if path else ["old", "new"]))
    if where == "old":
        old_root = flip(old_root, bit)
    elif where == "new":
        new_root = flip(new_root, bit)
    else:
        at = data.draw(st.integers(0, len(path) - 1))
        path[at] = flip(path[at], bit)
    assert not verify_consistency_path(old, new, path, old_root, new_root)


@settings(max_examples=200, deadline=None)
@given(size=sizes, data=st.data())
def test_wrong_index_size_or_extra_hashes_break_proofs(size: int, data: st.DataObject) -> None:
    hashes = tree(size)
    index = data.draw(st.integers(0, size - 1))
    path = list(inclusion_path(HashList(hashes), index, size))
    root = ref_mth(hashes)
    other = data.draw(st.integers(0, 70).filter(lambda i: i != index))
    assert not verify_inclusion_path(hashes[index], other, size, path, root)
    assert not verify_inclusion_path(hashes[index], index, size, [*path, root], root)
    assert not verify_inclusion_path(hashes[index], index, size, [root, *path], root)
    if path:
        assert not verify_inclusion_path(hashes[index], index, size, path[:-1], root)


def test_signed_proofs_verify_with_the_public_key_only() -> None:
    signer = Signer.generate()
    hashes = [leaf_hash(d) for d in LEAVES]
    old = signer.sign_head(5, ROOTS[5], bytes(32), 1)
    new = signer.sign_head(8, ROOTS[8], old.hash(), 2)
    proof = InclusionProof(6, 8, inclusion_path(HashList(hashes), 6, 8))
    assert verify_inclusion(signer.public_hex(), new, LEAVES[6], proof)
    assert not verify_inclusion(signer.public_hex(), new, LEAVES[5], proof)
    assert not verify_inclusion(signer.public_hex(), old, LEAVES[6], proof)  # other size
    assert not verify_inclusion(Signer.generate().public_key, new, LEAVES[6], proof)
    consistency = ConsistencyProof(5, 8, consistency_path(HashList(hashes), 5, 8))
    assert verify_consistency(signer.public_pem(), old, new, consistency)
    assert not verify_consistency(signer.public_pem(), new, old, consistency)
    forged = signer.sign_head(8, flip(ROOTS[8], 3), old.hash(), 2)
    assert not verify_consistency(Signer.generate().public_key, old, forged, consistency)
    assert not verify_consistency(signer.public_key, old, forged, consistency)


def test_proofs_round_trip_as_json() -> None:
    proof = InclusionProof(1, 5, (H["l0"], H["n23"], H["l4"]))
    assert InclusionProof.from_json(proof.to_json()) == proof
    consistency = ConsistencyProof(2, 5, (H["n23"], H["l4"]))
    assert ConsistencyProof.from_json(consistency.to_json()) == consistency
    for bad in (b"", b"[]", b'{"index": 1}', b'{"index": -1, "size": 2, "path": []}',
                b'{"index": 1, "size": 2, "path": ["zz"]}',
                b'{"index": 1, "size": 2, "path": ["00"]}',
                b'{"index": 1, "size": 2, "path": "00"}'):
        with pytest.raises(AuditError):
            InclusionProof.from_json(bad)


# -- garbage never raises --------------------------------------------------------------------

garbage = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats()
    | st.binary(max_size=40) | st.text(max_size=40) | st.just(b"\x00" * 32),
    lambda inner: st.lists(inner, max_size=4) | st.tuples(inner, inner)
    | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8)


@settings(max_examples=300, deadline=None)
@given(args=st.tuples(garbage, garbage, garbage, garbage, garbage))
def test_path_verifiers_never_raise_on_garbage(args: tuple[object, ...]) -> None:
    # garbage can be right by chance ((h, 0, 1, [], h) is a valid one-leaf proof): a bool
    assert isinstance(verify_inclusion_path(*args), bool)  # type: ignore[arg-type]
    assert isinstance(verify_consistency_path(*args), bool)  # type: ignore[arg-type]


@pytest.mark.parametrize("args", [
    (H["l0"], True, 1, [], H["l0"]),  # a bool is no index
    (H["l0"], 0, 1.0, [], H["l0"]),
    (H["l0"][:31], 0, 1, [], H["l0"][:31]),
    (bytearray(H["l0"]), 0, 1, [], H["l0"]),
    (H["l0"], 0, 2, [H["l1"][:16]], H["n01"]),
    (H["l0"], 0, 2, [H["l1"].hex()], H["n01"]),
    (H["l0"], 0, 2**64, [H["l1"]], H["n01"]),
    (H["l0"], -1, 2, [H["l1"]], H["n01"]),
    (H["l0"], 0, 2, None, H["n01"]),
    (H["l0"], 0, 2, [H["l1"]] * 131, H["n01"]),
])
def test_malformed_inclusion_arguments_are_false(args: tuple[object, ...]) -> None:
    assert verify_inclusion_path(H["l0"], 0, 2, [H["l1"]], H["n01"])  # the good one
    assert verify_inclusion_path(*args) is False  # type: ignore[arg-type]


@settings(max_examples=300, deadline=None)
@given(args=st.tuples(garbage, garbage, garbage, garbage), proof_index=garbage,
       path=st.lists(st.binary(min_size=32, max_size=32), max_size=3))
def test_signed_verifiers_never_raise_on_garbage(args: tuple[object, ...], proof_index: object,
                                                 path: list[bytes]) -> None:
    assert verify_inclusion(*args) is False  # type: ignore[arg-type]
    assert verify_consistency(*args) is False  # type: ignore[arg-type]
    signer = Signer.generate()
    old = signer.sign_head(1, ROOTS[8], bytes(32), 1)  # roots no garbage leaf hashes to
    new = signer.sign_head(2, ROOTS[7], old.hash(), 2)
    odd = InclusionProof(proof_index, 1, tuple(path))  # type: ignore[arg-type]
    assert verify_inclusion(signer.public_key, old, args[0], odd) is False  # type: ignore[arg-type]
    assert verify_inclusion(args[1], old, LEAVES[0], odd) is False  # type: ignore[arg-type]
    weird = ConsistencyProof(1, proof_index, tuple(path))  # type: ignore[arg-type]
    assert verify_consistency(signer.public_key, old, new, weird) is False
    assert verify_consistency(args[2], old, new, weird) is False  # type: ignore[arg-type]
