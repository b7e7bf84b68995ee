"""A replay cursor: how far a source has been durably produced, written atomically.

The replayer saves it only after the producer has flushed everything before it, with a
write to a temporary file in the same folder, ``fsync`` and ``rename``, so after a crash the
file holds either the old position or the new one, never a torn one. Records between the
saved position and the crash are sent again on restart, with the same ``item_id``.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from pipeline.errors import SourceError


@dataclass(frozen=True)
class Position:
    source: str
    format: str
    next_row: int = 1  # the first row not yet durably produced
    pending_from: int = 1  # the first row whose delayed labels are not yet released
    done: bool = False


class Cursor:
    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self, source: str, fmt: str) -> Position:
        """The saved position for ``source``, or the start if there is none."""
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return Position(source, fmt)
        except (OSError, ValueError) as exc:
            raise SourceError(f"cursor {self.path} is unreadable ({exc}); delete it to start "
                              "over") from None
        try:
            position = Position(**data)
        except TypeError:
            raise SourceError(f"cursor {self.path} is not a chainwatch cursor; delete it or "
                              "choose another --cursor") from None
        if (position.source, position.format) != (source, fmt):
            raise SourceError(f"cursor {self.path} belongs to {position.source} "
                              f"({position.format}); choose another --cursor for this source")
        return position

    def save(self, position: Position) -> None:
        """Write ``position`` atomically; the cursor's directory must exist (the CLI checks
        it before the replay starts; no directory is created here)."""
        try:
            fd, tmp = tempfile.mkstemp(prefix=".cursor-", dir=self.path.parent)
        except OSError as exc:
            raise SourceError(f"cannot save cursor {self.path} ({exc.strerror}); check that "
                              f"its directory {self.path.parent} exists and is writable") from None
        replace_with(self.path, fd, tmp, json.dumps(asdict(position)))


def replace_with(path: Path, fd: int, tmp: str, text: str) -> None:
    """Write ``text`` to the temporary file ``tmp`` (open as ``fd``, in ``path``'s folder),
    fsync it and rename it over ``path``: a reader sees the old file or the new one."""
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        Path(tmp).replace(path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
