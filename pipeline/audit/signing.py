"""Signed tree heads and the log's Ed25519 key pair.

Heads
    A :class:`SignedHead` says "the log had ``size`` leaves with root ``root`` at
    ``timestamp_ms``, after the head whose hash is ``prev``" (32 zero bytes for the first
    head). The signed message is fixed-width and big-endian, so it has one encoding only::

        b"chainwatch-audit-head-v1\\n" ‖ size (8) ‖ root (32) ‖ prev (32) ‖ timestamp_ms (8)

    :meth:`SignedHead.to_bytes` is that message followed by the 64-byte signature, and
    :meth:`SignedHead.hash` is its SHA-256: the value the next head carries in ``prev``, so
    the heads form a hash chain and none can be dropped or rewritten unnoticed.
    :meth:`SignedHead.to_json` is the same with hex strings, for the audit topic and people.
    Checking a head (:func:`verify_head`) needs the public key and nothing else.

Keys
    The private key file is PEM (unencrypted PKCS#8, ``-----BEGIN PRIVATE KEY-----``) with
    mode 0600. :meth:`Signer.load_or_create` makes one on first use, atomically (a temporary
    file linked into place, so two starting processes agree on one key), and writes the
    public key next to it as ``<key file>.pub`` (PEM). It refuses a key file that its group
    or others may read, as ssh does. Public keys travel as PEM or as 64 hex characters (the
    raw 32 bytes); :func:`load_public_key` takes either.

>>> signer = Signer.generate()
>>> head = signer.sign_head(size=3, root=bytes(32), prev=bytes(32), timestamp_ms=1)
>>> verify_head(signer.public_hex(), head), verify_head(signer.public_pem(), head)
(True, True)
>>> verify_head(signer.public_key, SignedHead(4, head.root, head.prev, 1, head.signature))
False
"""

from __future__ import annotations

import hashlib
import stat
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from pipeline.audit.errors import AuditError, AuditKeyError
from pipeline.audit.merkle import HASH_SIZE
from pipeline.keyfiles import write_new

HEAD_CONTEXT = b"chainwatch-audit-head-v1\n"
SIGNATURE_SIZE = 64
_HEAD = struct.Struct(">Q32s32sQ")
_U64 = 2**64

PublicKeyLike = Ed25519PublicKey | bytes | str | Path
"""A public key: the key object, PEM (str or bytes), 64 hex characters, the raw 32 bytes, or
the Path of a PEM file."""


@dataclass(frozen=True, slots=True)
class SignedHead:
    """The log's size and root at a moment, linked to the previous head and signed."""

    size: int
    root: bytes
    prev: bytes
    timestamp_ms: int
    signature: bytes

    def message(self) -> bytes:
        """The exact bytes that are signed."""
        return HEAD_CONTEXT + _HEAD.pack(self.size, self.root, self.prev, self.timestamp_ms)

    def to_bytes(self) -> bytes:
        """The message followed by the signature: the head as published and chained."""
        return self.message() + self.signature

    def hash(self) -> bytes:
        """SHA-256 of :meth:`to_bytes`: what the next head carries as ``prev``."""
        return hashlib.sha256(self.to_bytes()).digest()

    @classmethod
    def from_bytes(cls, data: bytes) -> SignedHead:
        """The head of :meth:`to_bytes`; AuditError if ``data`` is not one."""
        size = len(HEAD_CONTEXT) + _HEAD.size
        if not isinstance(data, bytes) or len(data) != size + SIGNATURE_SIZE \
                or not data.startswith(HEAD_CONTEXT):
            raise AuditError("not a chainwatch signed head (wrong length or context)")
        tree_size, root, prev, timestamp_ms = _HEAD.unpack(data[len(HEAD_CONTEXT):size])
        return cls(tree_size, root, prev, timestamp_ms, data[size:])

    def to_json(self) -> bytes:
        return orjson.dumps({"size": self.size, "root": self.root.hex(),
                             "prev": self.prev.hex(), "timestamp_ms": self.timestamp_ms,
                             "signature": self.signature.hex()}, option=orjson.OPT_SORT_KEYS)

    @classmethod
    def from_json(cls, data: bytes | str) -> SignedHead:
        """The head of :meth:`to_json`; AuditError names what is wrong with ``data``."""
        try:
            obj: Any = orjson.loads(data)
        except (orjson.JSONDecodeError, TypeError) as exc:
            raise AuditError(f"signed head is not JSON: {exc}") from exc
        names = ["prev", "root", "signature", "size", "timestamp_ms"]
        if not isinstance(obj, dict) or sorted(obj) != names:
            raise AuditError(f"a signed head has exactly the fields {names}")
        try:
            binary = {k: bytes.fromhex(obj[k]) for k in ("root", "prev", "signature")}
        except (TypeError, ValueError) as exc:
            raise AuditError(f"signed head: root, prev and signature must be hex ({exc})") \
                from exc
        head = cls(size=obj["size"], timestamp_ms=obj["timestamp_ms"], **binary)
        if not _well_formed(head):
            raise AuditError("signed head: size and timestamp_ms must be 64-bit unsigned "
                             "integers, root and prev 32 bytes, the signature 64 bytes")
        return head

    def __repr__(self) -> str:
        return (f"SignedHead(size={self.size}, root={self.root.hex()[:16]}…, "
                f"timestamp_ms={self.timestamp_ms})")


def _well_formed(head: object) -> bool:
    return (isinstance(head, SignedHead)
            and all(type(v) is int and 0 <= v < _U64 for v in (head.size, head.timestamp_ms))
            and all(type(v) is bytes and len(v) == HASH_SIZE for v in (head.root, head.prev))
            and type(head.signature) is bytes and len(head.signature) == SIGNATURE_SIZE)


def verify_head(public_key: PublicKeyLike, head: SignedHead) -> bool:
    """Is ``head`` well formed and signed by ``public_key``? Never raises."""
    try:
        key = load_public_key(public_key)
        if not _well_formed(head):
            return False
        key.verify(head.signature, head.message())
    except (InvalidSignature, AuditError, TypeError, ValueError):
        return False
    return True


def load_public_key(value: PublicKeyLike) -> Ed25519PublicKey:
    """An Ed25519 public key from any :data:`PublicKeyLike`; AuditKeyError if it is none."""
    if isinstance(value, Ed25519PublicKey):
        return value
    try:
        if isinstance(value, Path):
            value = value.read_bytes()
        if isinstance(value, str):
            value = value.strip()
            value = bytes.fromhex(value) if len(value) == 2 * 32 else value.encode()
        if isinstance(value, bytes) and len(value) == 32:
            return Ed25519PublicKey.from_public_bytes(value)
        if isinstance(value, bytes):
            key = serialization.load_pem_public_key(value)
            if isinstance(key, Ed25519PublicKey):
                return key
    except (OSError, ValueError, TypeError) as exc:
        raise AuditKeyError(f"not an Ed25519 public key ({exc}); give the PEM file the log "
                            "wrote as <key file>.pub, or its 64 hex characters") from exc
    raise AuditKeyError("not an Ed25519 public key; give the PEM file the log wrote as "
                        "<key file>.pub, or its 64 hex characters")


class Signer:
    """The log's private key: signs heads, exports the public key; ``repr`` hides the key."""

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._key = private_key
        self.public_key = private_key.public_key()

    @classmethod
    def generate(cls) -> Signer:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def load(cls, path: str | Path) -> Signer:
        """The key in PEM file ``path``; AuditKeyError if missing, bad or open to others."""
        path = Path(path)
        try:
            mode = path.stat().st_mode
            if stat.S_IMODE(mode) & 0o077:
                raise AuditKeyError(f"private key {path} has mode {stat.S_IMODE(mode):04o}; "
                                    f"only its owner may read it: run chmod 600 {path}")
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except (OSError, ValueError, TypeError) as exc:
            raise AuditKeyError(f"cannot read the private key {path}: {exc}; restore it from "
                                "a backup (a new key cannot sign for an existing log)") from exc
        if not isinstance(key, Ed25519PrivateKey):
            raise AuditKeyError(f"private key {path} is not an Ed25519 key")
        return cls(key)

    @classmethod
    def load_or_create(cls, path: str | Path) -> Signer:
        """The key in ``path``, made first (mode 0600) if there is none; also writes the
        public key to ``<path>.pub`` if that is missing."""
        path = Path(path)
        if not path.exists():
            signer = cls.generate()
            pem = signer._key.private_bytes(serialization.Encoding.PEM,
                                            serialization.PrivateFormat.PKCS8,
                                            serialization.NoEncryption())
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                write_new(path, pem, 0o600)
            except FileExistsError:
                pass  # another process made it first: use theirs
            except OSError as exc:
                raise AuditKeyError(f"cannot create the private key {path}: {exc}") from exc
        signer = cls.load(path)
        public = Path(f"{path}.pub")
        if not public.exists():
            try:
                public.write_text(signer.public_pem())
            except OSError as exc:
                raise AuditKeyError(f"cannot write the public key {public}: {exc}") from exc
        return signer

    def sign_head(self, size: int, root: bytes, prev: bytes, timestamp_ms: int) -> SignedHead:
        unsigned = SignedHead(size, root, prev, timestamp_ms, bytes(SIGNATURE_SIZE))
        if not _well_formed(unsigned):
            raise AuditError(f"cannot sign a head of size {size!r} at {timestamp_ms!r}: sizes "
                             "and times are 64-bit unsigned, root and prev 32-byte hashes")
        return SignedHead(size, root, prev, timestamp_ms, self._key.sign(unsigned.message()))

    def sign(self, message: bytes) -> bytes:
        """An Ed25519 signature of ``message`` (callers prefix a context of their own)."""
        return self._key.sign(message)

    def public_pem(self) -> str:
        """The public key as PEM (SubjectPublicKeyInfo)."""
        return self.public_key.public_bytes(serialization.Encoding.PEM,
                                            serialization.PublicFormat.SubjectPublicKeyInfo
                                            ).decode()

    def public_hex(self) -> str:
        """The raw 32-byte public key as 64 hex characters."""
        return public_hex(self.public_key)

    def __repr__(self) -> str:
        return f"Signer(public_key={self.public_hex()})"


def public_hex(key: Ed25519PublicKey) -> str:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw).hex()
