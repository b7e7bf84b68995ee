"""The key that authenticates checkpoints: 32 random bytes every scorer of a group holds.

The key file holds 64 hex characters and has mode 0600. It lives outside the checkpoint store
(whoever can write the store must not be able to read the key) and is made on first use by
:meth:`CheckpointKey.load_or_create`; every scorer of a group needs the same file. The key's
value is kept in a :class:`~pipeline.settings.Secret`, so it shows in no ``repr`` or log.

>>> key = CheckpointKey.generate()
>>> key.verify(b"state", key.tag(b"state")), key.verify(b"forged", key.tag(b"state"))
(True, False)
>>> key
CheckpointKey('<in memory>')
"""

from __future__ import annotations

import hmac
import os
import re
import secrets
import stat
from pathlib import Path

from pipeline.errors import CheckpointError
from pipeline.keyfiles import write_new
from pipeline.secret import Secret

KEY_SIZE = 32


class CheckpointKey:
    """The HMAC-SHA256 key that authenticates checkpoints; ``repr`` shows where, never what.

    The key file holds 64 hex characters (32 random bytes) and has mode 0600; it lives outside
    the checkpoint store, and every scorer of a group needs the same one.
    """

    __slots__ = ("_secret", "path")

    def __init__(self, raw: bytes, path: Path | None = None) -> None:
        if len(raw) != KEY_SIZE:
            raise CheckpointError(f"a checkpoint key is {KEY_SIZE} bytes, not {len(raw)}")
        self._secret = Secret(raw.hex())
        self.path = path

    @classmethod
    def generate(cls) -> CheckpointKey:
        return cls(secrets.token_bytes(KEY_SIZE))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> CheckpointKey:
        """The key in ``path``; CheckpointError if it is missing, malformed or open to others."""
        path = Path(path)
        try:
            mode = stat.S_IMODE(path.stat().st_mode)
            text = path.read_text(encoding="ascii").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise CheckpointError(f"cannot read the checkpoint key {path}: {exc}; give every "
                                  "scorer of the group the same key file (--checkpoint-key)"
                                  ) from exc
        if mode & 0o077:
            raise CheckpointError(f"checkpoint key {path} has mode {mode:04o}; only its owner "
                                  f"may read it: run chmod 600 {path}")
        if len(text) != 2 * KEY_SIZE or not re.fullmatch(r"[0-9a-f]+", text):
            raise CheckpointError(f"checkpoint key {path} is not {2 * KEY_SIZE} hex "
                                  "characters; restore it, or delete it to make a new one "
                                  "(then the existing checkpoints are refused)")
        return cls(bytes.fromhex(text), path)

    @classmethod
    def load_or_create(cls, path: str | os.PathLike[str]) -> CheckpointKey:
        """The key in ``path``, made first (mode 0600, atomically) if there is none."""
        path = Path(path)
        if not path.exists():
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                write_new(path, (secrets.token_hex(KEY_SIZE) + "\n").encode())
            except FileExistsError:
                pass  # another scorer made it first: use theirs
            except OSError as exc:
                raise CheckpointError(f"cannot create the checkpoint key {path}: {exc}; "
                                      "choose a writable place with --checkpoint-key") from exc
        return cls.load(path)

    def tag(self, data: bytes) -> bytes:
        return hmac.digest(bytes.fromhex(self._secret.get()), data, "sha256")

    def verify(self, data: bytes, tag: bytes) -> bool:
        return hmac.compare_digest(self.tag(data), tag)

    def __repr__(self) -> str:
        return f"CheckpointKey({str(self.path) if self.path else '<in memory>'!r})"
