"""Files that must appear whole or not at all, and never be replaced: keys made on first use.

Both the audit log's signing key and the scorers' checkpoint key are created the first time a
service needs them, possibly by several processes at once. :func:`write_new` writes a
temporary file in the same folder with the final mode (whatever the umask), fsyncs it and
links it into place, so a reader sees either no key or the whole key, and a second writer
gets :class:`FileExistsError` instead of replacing the first writer's key.

>>> import tempfile
>>> with tempfile.TemporaryDirectory() as folder:
...     path = Path(folder) / "example.key"
...     write_new(path, b"first")
...     try:
...         write_new(path, b"second")
...     except FileExistsError:
...         pass
...     path.read_bytes(), oct(path.stat().st_mode & 0o777)
(b'first', '0o600')
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def write_new(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Write ``data`` to a new file ``path`` with ``mode``, atomically and durably;
    FileExistsError if ``path`` exists (which is then left as it is)."""
    temp = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.fchmod(fd, mode)  # whatever the umask
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(temp, path)  # unlike rename, never replaces an existing file
    finally:
        temp.unlink()
    fsync_path(path.parent)


def fsync_path(path: str | os.PathLike[str]) -> None:
    """Flush ``path`` (a file, or a folder after a rename or link in it) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
