"""Checkpoints: one scorer task's state, stored atomically under a URI and verified on load.

A :class:`CheckpointStore` is addressed by URI and does all its I/O through ``pyarrow.fs``:

    chainwatch-data/checkpoints        a local directory (relative to the working directory)
    file:///var/lib/chainwatch/ckpt    the same, as a URI
    s3://bucket/prefix                 S3 or any S3-compatible server (``s3_endpoint=...``)

Layout
    ``<root>/<group>/<task>/<seq:012d>-<sha256>.ckpt``: ``group`` is the consumer group,
    ``task`` one scorer task (``p0007`` for partition 7), ``seq`` counts up from 1 per task.

Object (format version 2)
    One object holds everything: ``CWCKPT2\\n``, a one-line JSON header (auth, group, task,
    seq, created_at, size, meta), ``\\n``, the caller's bytes, then, when ``auth`` is
    ``hmac-sha256``, a 32-byte HMAC-SHA256 tag of all that comes before it. ``sha256`` in the
    name is the digest of the whole object, so ``sha256sum`` of the file equals its name, and
    the digest sent to the audit log vouches for ``meta`` (the offsets covered) as well as the
    state. A copy moved into another task's folder is refused: its header names its real
    place. An object of another format version is refused with a message saying so.

Authentication
    The digest in a name proves nothing about who wrote the object: anyone who can write to
    the store can compute it. A store opened with a :class:`CheckpointKey` (32 random bytes
    the scorers hold, outside the store) tags every object it saves and refuses, on load,
    any object whose tag is missing or wrong, comparing with :func:`hmac.compare_digest`
    before returning a single byte. Every scorer of a group shares the store, so they must
    share the key file too. A store opened without a key still checks digests, and reads
    tagged objects without checking their tag: what it returns is *not* authenticated, so
    nothing may decode it (the scorer's state holds river estimators as pickles, see
    :mod:`pipeline.state`) unless ``trusted`` (the audit log's proof) vouched for it.

Atomicity
    Local: write a temporary ``.<name>.<pid>-<random>.tmp`` in the same folder, fsync, rename,
    fsync the folder. S3: one object upload, which S3 publishes whole or not at all. Either
    way no partial checkpoint is ever visible under a final name, and one that were would
    fail its digest. Several processes can share a store without locks as long as each task
    has one writer at a time (Kafka gives each partition to one scorer): writers of different
    tasks touch different folders, and temporary names never collide.

Loading
    :meth:`CheckpointStore.load` returns bytes, never decodes them, and refuses an object
    whose digest does not match its name, whose tag does not verify (with a key), or (with
    ``trusted``) whose digest the audit log lacks. What the bytes are is the caller's: the
    scorer's are :mod:`pipeline.state` (state format 2, ``state_format`` in the meta).
    :meth:`CheckpointStore.load_newest_good` falls back past refused ones, and past those
    its ``accept`` callback refuses (a state of another format, such as the previous
    release's pickles, or one that does not load), with one warning each, counted in
    ``chainwatch_checkpoints_refused_total{reason}``; it raises, rather than falling back,
    when the store itself cannot be reached. :meth:`CheckpointStore.prune` never deletes the
    newest checkpoint that verifies.

>>> import tempfile
>>> key = CheckpointKey.generate()
>>> with tempfile.TemporaryDirectory() as root, CheckpointStore.from_uri(root, key=key) as store:
...     ref = store.save("scorers", "p0007", b"state", {"offsets": {"chain.dex/7": 41}})
...     store.load(ref), ref.seq, [r.seq for r in store.list("scorers", "p0007")]
(b'state', 1, [1])
"""

from __future__ import annotations

import builtins
import contextlib
import hashlib
import json
import logging
import os
import re
import secrets
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import unquote, urlsplit

import pyarrow.fs as pafs

from pipeline.checkpoint_key import CheckpointKey
from pipeline.errors import CheckpointError
from pipeline.keyfiles import fsync_path
from pipeline.metrics import CHECKPOINTS_REFUSED
from pipeline.secret import Secret

__all__ = ["FORMAT_VERSION", "CheckpointKey", "CheckpointRef", "CheckpointRefused",
           "CheckpointStore"]

logger = logging.getLogger(__name__)

FORMAT_VERSION = 2
MAGIC = b"CWCKPT%d\n" % FORMAT_VERSION
TAG_SIZE = 32  # HMAC-SHA256
_AUTH_HMAC, _AUTH_NONE = "hmac-sha256", "none"
_HEADER_FIELDS = ["auth", "created_at", "group", "meta", "seq", "size", "task"]
_S3_CONNECT_TIMEOUT_S = 5.0
SCHEMES = "a local directory, file:///absolute/path or s3://bucket/prefix"
_NAME = re.compile(r"(\d{12})-([0-9a-f]{64})\.ckpt")
_TEMP = re.compile(r"\..+\.tmp")
_COMPONENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")
_HEADER_PROBE = 4096
_MAX_META = 64 * 1024
_STALE_TEMP_NS = 3600 * 10**9  # prune removes temporary files a crashed writer left behind
_REF_TYPES: dict[str, type] = {"uri": str, "group": str, "task": str, "seq": int, "sha256": str,
                               "size": int, "created_at": int, "meta": dict}


class CheckpointRefused(CheckpointError):
    """This checkpoint is bad (corrupt, unauthenticated, untrusted, of another format version,
    misplaced or gone, or its state does not load); an older one may do.

    ``reason`` is a short code, the label of ``chainwatch_checkpoints_refused_total``.
    """

    def __init__(self, message: str, reason: str = "header") -> None:
        super().__init__(message)
        self.reason = reason


_Refused = CheckpointRefused


@dataclass(frozen=True, slots=True)
class CheckpointRef:
    """Where one checkpoint is and what it claims; ``meta`` is JSON data, treat it as read-only.

    ``size`` counts the caller's bytes; ``created_at`` is Unix time in milliseconds.
    """

    uri: str
    group: str
    task: str
    seq: int
    sha256: str
    size: int
    created_at: int
    meta: dict[str, Any] = field(hash=False)

    @property
    def name(self) -> str:
        return f"{self.seq:012d}-{self.sha256}.ckpt"

    def to_record(self) -> dict[str, Any]:
        """Canonical JSON-able dict: fields in declared order, ``meta`` keys sorted, exact ints."""
        return {"uri": self.uri, "group": self.group, "task": self.task, "seq": self.seq,
                "sha256": self.sha256, "size": self.size, "created_at": self.created_at,
                "meta": json.loads(_meta_json(self.meta))}

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> CheckpointRef:
        """The ref of a :meth:`to_record` dict; CheckpointError names a missing or bad field."""
        if set(record) != set(_REF_TYPES):
            raise CheckpointError(f"checkpoint record has fields {sorted(record)}, expected "
                                  f"{list(_REF_TYPES)}")
        for name, kind in _REF_TYPES.items():
            if type(record[name]) is not kind:  # exact: a bool is no int here
                raise CheckpointError(f"checkpoint record field {name!r}: expected "
                                      f"{kind.__name__}, got {record[name]!r}")
        if not re.fullmatch(r"[0-9a-f]{64}", record["sha256"]) or record["seq"] < 1:
            raise CheckpointError(f"checkpoint record: sha256 {record['sha256']!r} or seq "
                                  f"{record['seq']!r} is not valid")
        return cls(**{name: record[name] for name in _REF_TYPES if name != "meta"},
                   meta=json.loads(_meta_json(record["meta"])))


class CheckpointStore:
    """Checkpoints under one root; build it with :meth:`from_uri`.

    It is a sink like the others (open / write / flush / close, and a context manager):
    ``write`` is :meth:`save`, ``flush`` has nothing to do since a save is durable when it
    returns, and ``close`` refuses later saves.
    """

    def __init__(self, fs: pafs.FileSystem, root: str, *, local: bool,
                 endpoint: str | None = None, key: CheckpointKey | None = None) -> None:
        self._fs = fs
        self._root = root.rstrip("/") or "/"
        self._local = local
        self._endpoint = endpoint
        self._key = key
        self._closed = False

    @classmethod
    def from_uri(cls, uri: str, *, s3_endpoint: str | None = None,
                 s3_access_key: str | None = None, s3_secret_key: str | Secret | None = None,
                 s3_region: str | None = None,
                 key: CheckpointKey | None = None) -> CheckpointStore:
        """A store for ``uri`` (see the module docstring); the ``s3_*`` settings are for s3://.

        ``s3_endpoint`` is ``http://host:port`` for a local S3-compatible server (None: AWS).
        Without keys, pyarrow looks up ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY``, the
        AWS config files, then instance metadata. Keys never appear in logs or ``repr``.
        With ``key``, saves are tagged and loads authenticated (see the module docstring).
        """
        match = _SCHEME.match(uri)
        scheme = match.group(1).lower() if match else ""
        if scheme == "s3":
            store = cls._s3(uri, s3_endpoint, s3_access_key, s3_secret_key, s3_region)
            store._key = key
            return store
        if scheme not in ("", "file"):
            raise CheckpointError(f"checkpoint URI {_shown(uri)!r} has the unsupported scheme "
                                  f"{scheme!r}; use {SCHEMES}")
        if scheme == "file":
            parts = urlsplit(uri)
            if parts.netloc not in ("", "localhost") or parts.query or parts.fragment:
                raise CheckpointError(f"checkpoint URI {uri!r}: a file URI is "
                                      "file:///absolute/path, with no host, query or fragment")
            path = unquote(parts.path)
        else:
            path = uri
        if not path.strip():
            raise CheckpointError(f"checkpoint URI is empty; use {SCHEMES}")
        return cls(pafs.LocalFileSystem(), str(Path(path).resolve()), local=True, key=key)

    @classmethod
    def _s3(cls, uri: str, endpoint: str | None, access_key: str | None,
            secret_key: str | Secret | None, region: str | None) -> CheckpointStore:
        parts = urlsplit(uri)
        if "@" in parts.netloc:
            raise CheckpointError(f"checkpoint URI {_shown(uri)!r} carries credentials; pass "
                                  "them as the S3 access key and secret key settings instead")
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", parts.netloc) or parts.query \
                or parts.fragment:
            raise CheckpointError(f"checkpoint URI {uri!r}: expected s3://bucket/prefix, with "
                                  "no query or fragment")
        secret = secret_key.get() if isinstance(secret_key, Secret) else secret_key
        if (access_key is None) != (secret is None):
            raise CheckpointError("S3 checkpoint store: give both the access key and the "
                                  "secret key, or neither (to use the AWS environment)")
        options: dict[str, Any] = {"access_key": access_key, "secret_key": secret,
                                   "region": region, "connect_timeout": _S3_CONNECT_TIMEOUT_S}
        if endpoint is not None:
            found = _SCHEME.match(endpoint)
            host = endpoint[found.end():] if found else endpoint
            scheme = found.group(1).lower() if found else "https"
            if scheme not in ("http", "https") or not host.strip("/") or "/" in host.strip("/"):
                raise CheckpointError(f"S3 endpoint {endpoint!r}: expected http://host:port "
                                      "or https://host[:port]")
            options |= {"endpoint_override": host.strip("/"), "scheme": scheme}
        try:
            fs = pafs.S3FileSystem(**options)
        except (OSError, ValueError) as exc:  # pyarrow's errors never quote the secret key
            raise CheckpointError(f"cannot set up S3 for {uri!r}: {exc}") from exc
        root = f"{parts.netloc}/{parts.path.strip('/')}".rstrip("/")
        return cls(fs, root, local=False, endpoint=endpoint)

    def __repr__(self) -> str:
        shown = f", endpoint={self._endpoint!r}" if self._endpoint else ""
        return f"CheckpointStore({self.uri!r}{shown})"

    @property
    def uri(self) -> str:
        return self._uri(self._root)

    @property
    def authenticates(self) -> bool:
        """Whether loads are authenticated by a key (else only digest-checked)."""
        return self._key is not None

    # -- sink protocol ---------------------------------------------------------------------

    def open(self) -> Self:
        """Check the store is usable now, or raise one CheckpointError that says what to do.

        Local: create the root, write and delete a probe file in it. S3: the bucket exists
        and the root can be listed (a connection times out after a few seconds).
        """
        doing = f"open the checkpoint store {self.uri}"
        advice = ("choose a writable directory with --checkpoints (CHAINWATCH_CHECKPOINT_URI)"
                  if self._local else
                  "check the bucket, the credentials and that "
                  + (f"the S3 endpoint {self._endpoint}" if self._endpoint else
                     "AWS S3 (no S3 endpoint is set)")
                  + " answers; for another S3 server set storage.s3_endpoint "
                  "(CHAINWATCH_STORAGE_S3_ENDPOINT)")
        try:
            if self._local:
                self._fs.create_dir(self._root, recursive=True)
                probe = f"{self._root}/.probe.{os.getpid()}-{secrets.token_hex(4)}.tmp"
                self._fs.open_output_stream(probe).close()
                self._fs.delete_file(probe)
            else:
                if self._fs.get_file_info(self._root.split("/")[0]).type \
                        != pafs.FileType.Directory:
                    raise CheckpointError(f"the bucket of {self.uri} does not exist; create "
                                          "it, or point --checkpoints at an existing bucket")
                self._fs.get_file_info(pafs.FileSelector(self._root, allow_not_found=True))
        except OSError as exc:
            reason = " ".join(str(exc).split())  # pyarrow's messages may span lines
            raise CheckpointError(f"could not {doing}: {reason}; {advice}") from exc
        return self

    def flush(self) -> None:
        """Nothing is buffered: every save is durable when it returns."""

    def close(self) -> None:
        self._closed = True

    def __enter__(self) -> Self:
        return self.open()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # -- writing ---------------------------------------------------------------------------

    def save(self, group: str, task: str, data: bytes,
             meta: Mapping[str, Any] | None = None) -> CheckpointRef:
        """Store ``data`` as the next checkpoint of ``group``/``task``, atomically."""
        if self._closed:
            raise CheckpointError(f"checkpoint store {self.uri} is closed; open a new one")
        folder = self._folder(group, task)
        meta_json = _meta_json(meta or {})
        names, _ = self._scan(folder)
        seq = names[-1][0] + 1 if names else 1
        header = {"auth": _AUTH_HMAC if self._key else _AUTH_NONE,
                  "created_at": time.time_ns() // 1_000_000, "group": group,
                  "meta": json.loads(meta_json), "seq": seq, "size": len(data), "task": task}
        head = MAGIC + json.dumps(header, sort_keys=True, separators=(",", ":")).encode() + b"\n"
        if self._key is not None:
            data += self._key.tag(head + data)  # the trailer: data and tag are written as one
        sha = hashlib.sha256(head)
        sha.update(data)
        path = f"{folder}/{seq:012d}-{sha.hexdigest()}.ckpt"
        with _io(f"save checkpoint {self._uri(path)} (the previous one is intact)"):
            self._put(path, head, data)
        ref = self._ref(path, header)
        logger.info("saved checkpoint %s (%d bytes)", ref.uri, ref.size)
        return ref

    write = save

    def _put(self, path: str, head: bytes, data: bytes) -> None:
        target = f"{path.rpartition('/')[0]}/.{path.rpartition('/')[2]}.{os.getpid()}-" \
                 f"{secrets.token_hex(4)}.tmp" if self._local else path
        stream = None
        try:
            if self._local:
                self._fs.create_dir(path.rpartition("/")[0], recursive=True)
            stream = self._fs.open_output_stream(target)
            stream.write(head)
            stream.write(data)
            stream.close()
            if self._local:
                fsync_path(target)
                _publish(self._fs, target, path)
            size = self._fs.get_file_info(path).size
            if size != len(head) + len(data):
                raise OSError(f"stored {size} bytes instead of {len(head) + len(data)}")
        except BaseException:
            del stream  # an S3 stream uploads what it has when collected; remove that too
            with contextlib.suppress(OSError):
                self._fs.delete_file(target)
            raise

    def prune(self, group: str, task: str, keep: int = 3, *,
              good: CheckpointRef | None = None) -> builtins.list[str]:
        """Delete all but the newest ``keep`` checkpoints (by seq); return the deleted URIs.

        The newest checkpoint that verifies (its digest, and its tag when the store has a key)
        is never deleted, however many newer corrupt ones there are: when one of those it
        would delete is older than all that verify, they are read newest first until one
        does. ``good`` is a checkpoint the caller knows verifies (the one it just saved):
        when it is the newest, nothing is read. Temporary files a crashed writer left behind
        more than an hour ago go too.
        """
        if keep < 0:
            raise CheckpointError(f"prune: keep must be >= 0, got {keep}")
        names, temps = self._scan(self._folder(group, task))
        now = time.time_ns()
        doomed = names[:max(len(names) - keep, 0)]
        if doomed:
            spared = self._newest_verified(group, task, names, good)
            doomed = [name for name in doomed if name[0] != spared]
        paths = [path for _, _, path in doomed]
        paths += [t.path for t in temps if t.mtime_ns is not None
                  and now - t.mtime_ns > _STALE_TEMP_NS]
        for path in paths:
            with _io(f"delete {self._uri(path)}"), contextlib.suppress(FileNotFoundError):
                self._fs.delete_file(path)
        return [self._uri(path) for path in paths]

    def _newest_verified(self, group: str, task: str,
                         names: builtins.list[tuple[int, str, str]],
                         good: CheckpointRef | None) -> int | None:
        """The seq of the newest checkpoint that verifies; None if none does."""
        if good is not None and names and (good.seq, good.sha256) == names[-1][:2]:
            return good.seq
        for ref in reversed(self.list(group, task)):
            try:
                self.load(ref)
            except _Refused:
                continue
            return ref.seq
        return None

    # -- reading ---------------------------------------------------------------------------

    def tasks(self, group: str) -> builtins.list[str]:
        """The tasks of ``group`` that have a folder, sorted."""
        folder = f"{self._root}/{_component('group', group)}"
        with _io(f"list {self._uri(folder)}"):
            infos = self._fs.get_file_info(pafs.FileSelector(folder, allow_not_found=True))
        return sorted(i.base_name for i in infos
                      if i.type == pafs.FileType.Directory and _COMPONENT.fullmatch(i.base_name))

    def list(self, group: str, task: str) -> builtins.list[CheckpointRef]:
        """The checkpoints of ``group``/``task``, oldest first; unreadable ones are skipped."""
        refs: list[CheckpointRef] = []
        for seq, _, path in self._scan(self._folder(group, task))[0]:
            try:
                with _io(f"read {self._uri(path)}"), self._fs.open_input_file(path) as file:
                    size = file.size()
                    head = file.read_at(min(size, _HEADER_PROBE), 0)
                    if b"\n" not in head[len(MAGIC):] and size > len(head):
                        head = file.read_at(min(size, _MAX_META + 1024), 0)
                header, _ = _parse(head, self._uri(path), group, task, seq)
            except _Refused as exc:
                logger.warning("skipping checkpoint: %s", exc)
                continue
            refs.append(self._ref(path, header))
        return refs

    def newest(self, group: str, task: str) -> CheckpointRef | None:
        refs = self.list(group, task)
        return refs[-1] if refs else None

    def load(self, ref: CheckpointRef, *,
             trusted: Callable[[str], bool] | None = None) -> bytes:
        """The bytes of ``ref``, after checking its digest, its tag (when the store has a key)
        and ``trusted(sha256)`` if given; _Refused (a CheckpointError) says which failed."""
        path = f"{self._folder(ref.group, ref.task)}/{ref.name}"
        if self._uri(path) != ref.uri:
            raise CheckpointError(f"checkpoint {ref.uri} is not in this store ({self.uri}); "
                                  "load it through a store opened on its own URI")
        with _io(f"read {ref.uri}"), self._fs.open_input_stream(path) as stream:
            blob: bytes = stream.read()
        actual = hashlib.sha256(blob).hexdigest()
        if actual != ref.sha256:
            raise _Refused(f"refusing checkpoint {ref.uri}: its name says sha256 {ref.sha256} "
                           f"but its content hashes to {actual}; it is corrupt or was tampered "
                           "with, so restore an older one", reason="digest")
        header, start = _parse(blob, ref.uri, ref.group, ref.task, ref.seq)
        tagged = header["auth"] == _AUTH_HMAC
        end = len(blob) - TAG_SIZE if tagged else len(blob)
        if self._key is not None and not (tagged and end >= start
                                          and self._key.verify(blob[:end], blob[end:])):
            raise _Refused(f"refusing checkpoint {ref.uri}: "
                           + ("its authentication tag does not verify" if tagged else
                              "it carries no authentication tag")
                           + "; it was not written with this scorer's checkpoint key (forged, "
                           "or the scorers of the group do not share one key file), so "
                           "restore an older one", reason="tag")
        if trusted is not None and not trusted(ref.sha256):
            raise _Refused(f"refusing checkpoint {ref.uri}: digest {ref.sha256} not in the "
                           "audit log; it was never confirmed, so restore an older one",
                           reason="untrusted")
        if end - start != header["size"] or self._ref(path, header) != ref:
            raise _Refused(f"refusing checkpoint {ref.uri}: its header does not match the "
                           "reference (size, created_at or meta differ)")
        return blob[start:end]

    def load_newest_good(self, group: str, task: str,
                         trusted: Callable[[str], bool] | None = None,
                         accept: Callable[[CheckpointRef, bytes], None] | None = None,
                         ) -> tuple[CheckpointRef, bytes] | None:
        """The newest checkpoint that loads and that ``accept`` takes, skipping refused ones.

        ``accept(ref, data)`` sees the verified bytes and raises :class:`CheckpointRefused`
        for a checkpoint its caller cannot use (its state does not decode): it is skipped like
        a corrupt one; any other error propagates. Each checkpoint skipped is one warning
        saying why and what happens next, and counts in
        ``chainwatch_checkpoints_refused_total{reason}``.
        """
        refs = self.list(group, task)
        for index in range(len(refs) - 1, -1, -1):
            ref = refs[index]
            try:
                data = self.load(ref, trusted=trusted)
                if accept is not None:
                    accept(ref, data)
            except _Refused as exc:
                CHECKPOINTS_REFUSED.labels(reason=exc.reason).inc()
                logger.warning("skipping checkpoint: %s; %s", exc,
                               f"trying the previous one (seq {refs[index - 1].seq})" if index
                               else "no older checkpoint is left (the task starts fresh)")
                continue
            return ref, data
        return None

    # -- helpers ---------------------------------------------------------------------------

    def _folder(self, group: str, task: str) -> str:
        return f"{self._root}/{_component('group', group)}/{_component('task', task)}"

    def _uri(self, path: str) -> str:
        return Path(path).as_uri() if self._local else f"s3://{path}"

    def _scan(self, folder: str,
              ) -> tuple[builtins.list[tuple[int, str, str]], builtins.list[pafs.FileInfo]]:
        """(seq, sha256, path) of each checkpoint by seq, and the temporary files."""
        with _io(f"list {self._uri(folder)}"):
            infos = self._fs.get_file_info(pafs.FileSelector(folder, allow_not_found=True))
        names: list[tuple[int, str, str]] = []
        temps: list[pafs.FileInfo] = []
        for info in infos:
            if info.type != pafs.FileType.File:
                continue
            if found := _NAME.fullmatch(info.base_name):
                names.append((int(found.group(1)), found.group(2), info.path))
            elif _TEMP.fullmatch(info.base_name):
                temps.append(info)
        return sorted(names), temps

    def _ref(self, path: str, header: dict[str, Any]) -> CheckpointRef:
        sha = path.rpartition("/")[2][13:77]  # the name is <seq:012d>-<sha256>.ckpt
        return CheckpointRef(uri=self._uri(path), group=header["group"], task=header["task"],
                             seq=header["seq"], sha256=sha, size=header["size"],
                             created_at=header["created_at"], meta=header["meta"])


def _parse(blob: bytes, uri: str, group: str, task: str, seq: int) -> tuple[dict[str, Any], int]:
    """The header at the start of ``blob`` and where the data begins; _Refused if it is off."""
    end = blob.find(b"\n", len(MAGIC))
    if (found := re.match(rb"CWCKPT(\d+)\n", blob)) and found.group() != MAGIC:
        raise _Refused(f"{uri} is a checkpoint of format version {int(found.group(1))}; this "
                       f"chainwatch reads version {FORMAT_VERSION} only, so it is skipped "
                       "(delete it, or restore with the chainwatch that wrote it)",
                       reason="format")
    if not blob.startswith(MAGIC) or end < 0:
        raise _Refused(f"{uri} is not a chainwatch checkpoint (bad magic or header)")
    try:
        header = json.loads(blob[len(MAGIC):end])
    except ValueError as exc:
        raise _Refused(f"{uri} has an unreadable header ({exc})") from exc
    expected = {"group": group, "task": task, "seq": seq}
    if not isinstance(header, dict) or sorted(header) != _HEADER_FIELDS \
            or any(header[k] != v for k, v in expected.items()) \
            or header["auth"] not in (_AUTH_HMAC, _AUTH_NONE) \
            or not isinstance(header["meta"], dict) \
            or not all(type(header[k]) is int for k in ("created_at", "size")):
        raise _Refused(f"{uri} has a header that does not fit its place {expected}: a "
                       "checkpoint copied from elsewhere, or not written by chainwatch")
    return header, end + 1


def _component(kind: str, value: str) -> str:
    if not isinstance(value, str) or not _COMPONENT.fullmatch(value):
        raise CheckpointError(f"checkpoint {kind} {value!r}: use 1-200 letters, digits, '.', "
                              "'_' or '-', starting with a letter or digit")
    return value


def _meta_json(meta: Mapping[str, Any]) -> str:
    """Canonical compact JSON of ``meta`` (sorted keys); CheckpointError if it is not JSON data."""
    try:
        text = json.dumps(dict(meta), sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"checkpoint meta must be JSON data: {exc}") from exc
    if json.loads(text) != meta:
        raise CheckpointError("checkpoint meta must survive a JSON round trip unchanged: use "
                              "string keys and lists, not int keys or tuples")
    if len(text) > _MAX_META:
        raise CheckpointError(f"checkpoint meta is {len(text)} bytes of JSON; keep it under "
                              f"{_MAX_META} (put state in the checkpoint data)")
    return text


def _shown(uri: str) -> str:
    """``uri`` without any user:password part."""
    parts = urlsplit(uri)
    return parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()


def _publish(fs: pafs.FileSystem, temp: str, path: str) -> None:
    """Rename ``temp`` over ``path`` (atomic on one file system) and make the rename durable."""
    fs.move(temp, path)
    fsync_path(path.rpartition("/")[0])


@contextlib.contextmanager
def _io(doing: str) -> Iterator[None]:
    """Turn pyarrow's I/O errors into CheckpointError; a missing file is a _Refused one."""
    try:
        yield
    except FileNotFoundError as exc:
        raise _Refused(f"could not {doing}: it is gone (pruned meanwhile?)",
                       reason="gone") from exc
    except OSError as exc:
        raise CheckpointError(f"could not {doing}: {exc}; check the checkpoint URI, that the "
                              "store is reachable and the credentials") from exc
