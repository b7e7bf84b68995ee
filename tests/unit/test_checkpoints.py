"""The checkpoint store on a local directory: layout, atomicity, digests, trust, pruning,
authentication with the checkpoint key; and the scorer tasks' restore path on top of it."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import multiprocessing
import os
import pickle
import re
import stat
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest
from kafka import TopicPartition
from kafka.errors import KafkaConnectionError, KafkaTimeoutError
from prometheus_client import REGISTRY

from consumers.tasks import Binding, CheckpointMismatch, Task, TaskManager
from pipeline import checkpoints, state
from pipeline.checkpoints import CheckpointKey, CheckpointRef, CheckpointStore
from pipeline.errors import ChainwatchError, CheckpointError
from pipeline.scoring import Scorer
from pipeline.secret import Secret
from pipeline.settings import Settings
from pipeline.state import fields

GROUP, TASK = "chainwatch-scorer", "p0007"
NAME = re.compile(r"\d{12}-[0-9a-f]{64}\.ckpt")


@pytest.fixture
def store(tmp_path: Path) -> CheckpointStore:
    return CheckpointStore.from_uri(str(tmp_path / "ckpt"))


def _folder(tmp_path: Path, task: str = TASK) -> Path:
    return tmp_path / "ckpt" / GROUP / task


def _flip_last_byte(path: Path) -> None:
    blob = bytearray(path.read_bytes())
    blob[-1] ^= 0x01
    path.write_bytes(bytes(blob))


def _save_three(store: CheckpointStore) -> list[CheckpointRef]:
    return [store.save(GROUP, TASK, f"state-{i}".encode(), {"offsets": {"chain.dex/7": i}})
            for i in range(1, 4)]


# -- saving, listing, layout ------------------------------------------------------------------


def test_save_list_newest_in_order_with_increasing_seq(store: CheckpointStore,
                                                       tmp_path: Path) -> None:
    assert store.list(GROUP, TASK) == [] and store.newest(GROUP, TASK) is None
    refs = _save_three(store)
    assert [r.seq for r in refs] == [1, 2, 3]
    assert store.list(GROUP, TASK) == refs  # what save returns is what list finds
    assert store.newest(GROUP, TASK) == refs[-1]
    assert [store.load(r) for r in refs] == [b"state-1", b"state-2", b"state-3"]
    assert refs[1].meta == {"offsets": {"chain.dex/7": 2}} and refs[1].size == len(b"state-2")


def test_layout_name_is_seq_and_digest_of_the_whole_object(store: CheckpointStore,
                                                           tmp_path: Path) -> None:
    ref = store.save(GROUP, TASK, b"x" * 1000, {"model_versions": {"hst": "1"}})
    path = _folder(tmp_path) / f"000000000001-{ref.sha256}.ckpt"
    assert ref.uri == path.as_uri() and ref.name == path.name
    assert hashlib.sha256(path.read_bytes()).hexdigest() == ref.sha256  # sha256sum == name
    assert path.read_bytes().startswith(checkpoints.MAGIC)
    assert path.read_bytes().endswith(b"x" * 1000)


def test_tasks_of_a_group(store: CheckpointStore) -> None:
    assert store.tasks(GROUP) == []
    for task in ("p0002", "p0000", "p0001"):
        store.save(GROUP, task, b"s")
    store.save("other-group", "p0009", b"s")
    assert store.tasks(GROUP) == ["p0000", "p0001", "p0002"]
    assert store.tasks("other-group") == ["p0009"]


def test_file_uri_and_plain_path_are_the_same_store(store: CheckpointStore,
                                                    tmp_path: Path) -> None:
    ref = store.save(GROUP, TASK, b"s")
    same = CheckpointStore.from_uri((tmp_path / "ckpt").as_uri())
    assert same.uri == store.uri and same.list(GROUP, TASK) == [ref]
    assert same.load(ref) == b"s"


def test_to_record_is_canonical_and_round_trips(store: CheckpointStore) -> None:
    meta = {"offsets": {"chain.transactions/7": 2**70}, "model_versions": {"b": "2", "a": "1"}}
    ref = store.save(GROUP, TASK, b"s", meta)
    record = ref.to_record()
    assert list(record) == ["uri", "group", "task", "seq", "sha256", "size", "created_at",
                            "meta"]
    assert list(record["meta"]) == ["model_versions", "offsets"]  # sorted, recursively
    assert list(record["meta"]["model_versions"]) == ["a", "b"]
    text = json.dumps(record)
    assert str(2**70) in text  # exact, not a float
    assert json.dumps(store.newest(GROUP, TASK).to_record()) == text  # type: ignore[union-attr]
    assert CheckpointRef.from_record(json.loads(text)) == ref
    with pytest.raises(CheckpointError, match="'seq'"):
        CheckpointRef.from_record({**record, "seq": "1"})
    with pytest.raises(CheckpointError, match="fields"):
        CheckpointRef.from_record({k: v for k, v in record.items() if k != "meta"})


# -- atomicity --------------------------------------------------------------------------------


def test_no_temporary_files_are_left(store: CheckpointStore, tmp_path: Path) -> None:
    _save_three(store)
    files = [p.name for p in _folder(tmp_path).iterdir()]
    assert len(files) == 3 and all(NAME.fullmatch(name) for name in files)


def test_crash_before_rename_leaves_no_checkpoint(store: CheckpointStore, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    refs = _save_three(store)

    def crash(*args: object) -> None:
        raise OSError("simulated crash before rename")

    monkeypatch.setattr(checkpoints, "_publish", crash)
    with pytest.raises(CheckpointError, match="simulated crash"):
        store.save(GROUP, TASK, b"never visible")
    assert store.list(GROUP, TASK) == refs and store.newest(GROUP, TASK) == refs[-1]
    assert store.load(refs[-1]) == b"state-3"
    assert sorted(p.name for p in _folder(tmp_path).iterdir()) == sorted(r.name for r in refs)
    monkeypatch.undo()
    assert store.save(GROUP, TASK, b"next").seq == 4


def test_temp_file_of_a_killed_writer_is_invisible_and_pruned_once_stale(
        store: CheckpointStore, tmp_path: Path) -> None:
    ref = store.save(GROUP, TASK, b"good")
    temp = _folder(tmp_path) / f".000000000002-{'0' * 64}.ckpt.4242-deadbeef.tmp"
    temp.write_bytes(checkpoints.MAGIC + b"half a chec")
    assert store.list(GROUP, TASK) == [ref]
    assert store.save(GROUP, TASK, b"after").seq == 2
    assert store.prune(GROUP, TASK) == [] and temp.exists()  # may still be being written
    old = time.time() - 2 * 3600
    os.utime(temp, (old, old))
    assert store.prune(GROUP, TASK) == [temp.as_uri()] and not temp.exists()


# -- refusing bad checkpoints -----------------------------------------------------------------


def test_tampered_newest_is_refused_and_the_previous_one_is_used(
        store: CheckpointStore, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    refs = _save_three(store)
    path = _folder(tmp_path) / refs[-1].name
    _flip_last_byte(path)
    actual = hashlib.sha256(path.read_bytes()).hexdigest()
    with pytest.raises(CheckpointError) as info:
        store.load(refs[-1])
    message = str(info.value)
    assert refs[-1].sha256 in message and actual in message and refs[-1].uri in message
    with caplog.at_level(logging.WARNING, logger="pipeline.checkpoints"):
        assert store.load_newest_good(GROUP, TASK) == (refs[1], b"state-2")
    assert refs[-1].sha256 in caplog.text


def test_tampered_meta_is_refused_too(store: CheckpointStore, tmp_path: Path) -> None:
    refs = _save_three(store)
    path = _folder(tmp_path) / refs[-1].name
    path.write_bytes(path.read_bytes().replace(b'"chain.dex/7":3', b'"chain.dex/7":9'))
    assert store.newest(GROUP, TASK).meta == {"offsets": {"chain.dex/7": 9}}  # type: ignore[union-attr]
    with pytest.raises(CheckpointError, match="hashes to"):
        store.load(store.newest(GROUP, TASK))  # type: ignore[arg-type]
    assert store.load_newest_good(GROUP, TASK) == (refs[1], b"state-2")


def test_untrusted_digest_is_refused_and_the_previous_one_is_used(
        store: CheckpointStore, caplog: pytest.LogCaptureFixture) -> None:
    refs = _save_three(store)
    audit_log = {r.sha256 for r in refs[:2]}
    with pytest.raises(CheckpointError, match="not in the audit log"):
        store.load(refs[-1], trusted=audit_log.__contains__)
    assert store.load(refs[-1], trusted=lambda digest: True) == b"state-3"
    with caplog.at_level(logging.WARNING, logger="pipeline.checkpoints"):
        assert store.load_newest_good(GROUP, TASK, audit_log.__contains__) == (refs[1],
                                                                                b"state-2")
    assert "not in the audit log" in caplog.text
    assert store.load_newest_good(GROUP, TASK, trusted=lambda digest: False) is None


def test_a_copy_in_another_task_folder_is_refused(store: CheckpointStore,
                                                  tmp_path: Path) -> None:
    ref = store.save(GROUP, "p0001", b"partition one")
    _folder(tmp_path, "p0002").mkdir(parents=True)
    copy = _folder(tmp_path, "p0002") / ref.name
    copy.write_bytes((_folder(tmp_path, "p0001") / ref.name).read_bytes())
    assert store.list(GROUP, "p0002") == []  # its header names p0001
    forged = CheckpointRef(copy.as_uri(), GROUP, "p0002", 1, ref.sha256, ref.size,
                           ref.created_at, ref.meta)
    with pytest.raises(CheckpointError, match="does not fit its place"):
        store.load(forged)


def test_a_ref_from_another_store_is_refused(store: CheckpointStore, tmp_path: Path) -> None:
    ref = CheckpointStore.from_uri(str(tmp_path / "elsewhere")).save(GROUP, TASK, b"s")
    with pytest.raises(CheckpointError, match="not in this store"):
        store.load(ref)


def test_a_checkpoint_pruned_meanwhile_is_skipped(store: CheckpointStore,
                                                   tmp_path: Path) -> None:
    refs = _save_three(store)
    (_folder(tmp_path) / refs[-1].name).unlink()
    with pytest.raises(CheckpointError, match="gone"):
        store.load(refs[-1])
    assert store.load_newest_good(GROUP, TASK) == (refs[1], b"state-2")


# -- pruning ----------------------------------------------------------------------------------


def test_prune_keeps_the_newest(store: CheckpointStore) -> None:
    refs = [store.save(GROUP, TASK, bytes([i])) for i in range(2)]
    assert store.prune(GROUP, TASK, keep=3) == [] and store.list(GROUP, TASK) == refs
    refs += [store.save(GROUP, TASK, bytes([i])) for i in range(2, 5)]
    assert store.prune(GROUP, TASK, keep=3) == [r.uri for r in refs[:2]]
    assert store.list(GROUP, TASK) == refs[2:]
    assert store.save(GROUP, TASK, b"next").seq == 6  # seq never goes back
    assert store.prune(GROUP, TASK, keep=10) == []
    newest = store.list(GROUP, TASK)[-1]  # keep=0 still spares the newest that verifies
    assert len(store.prune(GROUP, TASK, keep=0)) == 3 and store.list(GROUP, TASK) == [newest]
    with pytest.raises(CheckpointError, match="keep"):
        store.prune(GROUP, TASK, keep=-1)


@pytest.mark.parametrize("keyed", [False, True])
def test_prune_never_deletes_the_newest_checkpoint_that_verifies(tmp_path: Path,
                                                                 keyed: bool) -> None:
    store = CheckpointStore.from_uri(str(tmp_path / "ckpt"),
                                     key=CheckpointKey.generate() if keyed else None)
    refs = [store.save(GROUP, TASK, f"state-{i}".encode()) for i in range(6)]
    for ref in refs[3:]:  # the newest three are corrupt: the newest good one is refs[2]
        _flip_last_byte(_folder(tmp_path) / ref.name)
    assert store.prune(GROUP, TASK, keep=3) == [r.uri for r in refs[:2]]
    assert [r.seq for r in store.list(GROUP, TASK)] == [3, 4, 5, 6]
    assert store.load_newest_good(GROUP, TASK) == (refs[2], b"state-2")
    assert store.prune(GROUP, TASK, keep=1) == [r.uri for r in refs[3:5]]
    assert store.load_newest_good(GROUP, TASK) == (refs[2], b"state-2")
    fresh = store.save(GROUP, TASK, b"state-new")  # vouched for: nothing is read back
    assert store.prune(GROUP, TASK, keep=1, good=fresh) == [r.uri for r in (refs[2], refs[5])]
    assert store.list(GROUP, TASK) == [fresh]
    _flip_last_byte(_folder(tmp_path) / fresh.name)  # none verifies: keep applies as before
    assert store.prune(GROUP, TASK, keep=0) == [fresh.uri]


# -- configuration and input errors -----------------------------------------------------------


@pytest.mark.parametrize("uri", ["gs://bucket/ckpt", "http://host/ckpt", "hdfs://nn/ckpt"])
def test_unsupported_scheme_says_which_are_supported(uri: str) -> None:
    with pytest.raises(CheckpointError) as info:
        CheckpointStore.from_uri(uri)
    assert isinstance(info.value, ChainwatchError)
    assert "file://" in str(info.value) and "s3://" in str(info.value)


@pytest.mark.parametrize("uri", ["", "file://otherhost/ckpt", "s3://", "s3://bucket/x?a=b"])
def test_malformed_uris_are_refused(uri: str) -> None:
    with pytest.raises(CheckpointError):
        CheckpointStore.from_uri(uri)


def test_credentials_in_the_uri_are_refused_without_echoing_them() -> None:
    with pytest.raises(CheckpointError) as info:
        CheckpointStore.from_uri("s3://AKIA:hunter2@bucket/ckpt")
    assert "hunter2" not in str(info.value) and "secret key" in str(info.value)


def test_s3_settings_are_checked_and_the_secret_never_shows() -> None:
    store = CheckpointStore.from_uri("s3://bucket/some/prefix/", s3_endpoint="http://127.0.0.1:1",
                                     s3_access_key="AK", s3_secret_key=Secret("hunter2"),
                                     s3_region="us-east-1")
    assert store.uri == "s3://bucket/some/prefix" and "hunter2" not in repr(store)
    with pytest.raises(CheckpointError, match="both"):
        CheckpointStore.from_uri("s3://bucket/ckpt", s3_access_key="AK")
    with pytest.raises(CheckpointError, match="endpoint"):
        CheckpointStore.from_uri("s3://bucket/ckpt", s3_endpoint="ftp://127.0.0.1:1")


@pytest.mark.parametrize("name", ["", "../up", "a/b", ".hidden", "p 7"])
def test_unsafe_group_or_task_names_are_refused(store: CheckpointStore, name: str) -> None:
    with pytest.raises(CheckpointError, match="task"):
        store.save(GROUP, name, b"s")
    with pytest.raises(CheckpointError, match="group"):
        store.list(name, TASK)


@pytest.mark.parametrize("meta", [{1: 2}, {"t": (1, 2)}, {"x": float("nan")}, {"x": object()},
                                  {"big": "x" * 70_000}])
def test_meta_must_be_small_json_data(store: CheckpointStore, meta: dict[object, object]) -> None:
    with pytest.raises(CheckpointError, match="meta"):
        store.save(GROUP, TASK, b"s", meta)  # type: ignore[arg-type]
    assert store.list(GROUP, TASK) == []


def test_sink_protocol(tmp_path: Path) -> None:
    with CheckpointStore.from_uri(str(tmp_path / "new" / "root")) as store:
        assert (tmp_path / "new" / "root").is_dir()  # open created it
        ref = store.write(GROUP, TASK, b"s")
        store.flush()
    assert store.load(ref) == b"s"  # reading still works after close
    with pytest.raises(CheckpointError, match="closed"):
        store.save(GROUP, TASK, b"s")


# -- several processes ------------------------------------------------------------------------


def _writer(root: str, task: str, count: int) -> list[int]:
    store = CheckpointStore.from_uri(root)
    return [store.save(GROUP, task, f"{task}-{i}".encode() * 100).seq for i in range(count)]


def test_two_processes_write_different_tasks_without_locks(tmp_path: Path) -> None:
    root = str(tmp_path / "ckpt")
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(_writer, root, task, 25) for task in ("p0000", "p0001")]
        assert [f.result() for f in futures] == [list(range(1, 26))] * 2
    store = CheckpointStore.from_uri(root)
    assert store.tasks(GROUP) == ["p0000", "p0001"]
    for task in ("p0000", "p0001"):
        refs = store.list(GROUP, task)
        assert [r.seq for r in refs] == list(range(1, 26))
        assert store.load(refs[-1]) == f"{task}-24".encode() * 100


# -- authentication: the key, tags, forged objects --------------------------------------------


def _keyed(tmp_path: Path, name: str = "ckpt") -> CheckpointStore:
    key = CheckpointKey.load_or_create(tmp_path / "keys" / "checkpoint.key")
    return CheckpointStore.from_uri(str(tmp_path / name), key=key)


def _forge(root: Path, group: str, task: str, payload: bytes, *, how: str = "no tag",
           meta: dict[str, object] | None = None) -> CheckpointRef:
    """What anyone who can write to the store can make without the scorers' key: an object
    in the documented layout with the right digest name, untagged (as a keyless store saves
    it), tagged with another key, or with a made-up tag."""
    key = None if how == "no tag" else CheckpointKey.generate()
    ref = CheckpointStore.from_uri(str(root), key=key).save(group, task, payload, meta)
    if how == "made-up tag":
        path = root / group / task / ref.name
        blob = path.read_bytes()[:-checkpoints.TAG_SIZE] + os.urandom(checkpoints.TAG_SIZE)
        path.unlink()
        sha = hashlib.sha256(blob).hexdigest()
        path.with_name(f"{ref.seq:012d}-{sha}.ckpt").write_bytes(blob)
        ref = dataclasses.replace(ref, sha256=sha,
                                  uri=path.with_name(f"{ref.seq:012d}-{sha}.ckpt").as_uri())
    return ref


def test_the_key_is_made_once_with_mode_0600_and_never_shown(tmp_path: Path) -> None:
    path = tmp_path / "data" / "checkpoint.key"
    key = CheckpointKey.load_or_create(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    text = path.read_text().strip()
    assert re.fullmatch(r"[0-9a-f]{64}", text)
    assert text not in repr(key) and text not in str(key)
    again = CheckpointKey.load_or_create(path)  # the same key: it authenticates the same tags
    assert path.read_text().strip() == text and again.verify(b"x", key.tag(b"x"))
    path.chmod(0o644)
    with pytest.raises(CheckpointError, match="chmod 600"):
        CheckpointKey.load(path)
    path.chmod(0o600)
    path.write_text("not a key\n")
    with pytest.raises(CheckpointError, match="64 hex"):
        CheckpointKey.load(path)


def test_a_keyed_store_tags_its_objects_and_reads_them_back(tmp_path: Path) -> None:
    store = _keyed(tmp_path)
    ref = store.save(GROUP, TASK, b"state", {"offsets": {"chain.dex/7": 1}})
    blob = (_folder(tmp_path) / ref.name).read_bytes()
    assert hashlib.sha256(blob).hexdigest() == ref.sha256 and ref.size == len(b"state")
    assert blob[-checkpoints.TAG_SIZE - len(b"state"):-checkpoints.TAG_SIZE] == b"state"
    assert store.load(ref) == b"state" and store.list(GROUP, TASK) == [ref]
    keyless = CheckpointStore.from_uri(str(tmp_path / "ckpt"))  # digest only, tag skipped
    assert keyless.load(ref) == b"state"


@pytest.mark.parametrize("forger", ["no tag", "made-up tag", "another key"])
def test_a_forged_object_with_a_valid_digest_name_is_refused_with_fallback(
        tmp_path: Path, forger: str, caplog: pytest.LogCaptureFixture) -> None:
    store = _keyed(tmp_path)
    good = store.save(GROUP, TASK, b"good state")
    forged_ref = _forge(tmp_path / "ckpt", GROUP, TASK, b"evil state", how=forger)
    assert forged_ref.seq == 2 and store.list(GROUP, TASK)[-1] == forged_ref
    assert hashlib.sha256((_folder(tmp_path) / forged_ref.name).read_bytes()).hexdigest() \
        == forged_ref.sha256  # the digest in its name is right: it proves nothing
    with pytest.raises(CheckpointError, match="authentication tag"):
        store.load(forged_ref)
    with caplog.at_level(logging.WARNING, logger="pipeline.checkpoints"):
        assert store.load_newest_good(GROUP, TASK) == (good, b"good state")
    refusals = [r.getMessage() for r in caplog.records if forged_ref.uri in r.getMessage()]
    assert len(refusals) == 1 and "\n" not in refusals[0]


def test_an_object_of_another_format_version_is_refused_by_name(tmp_path: Path) -> None:
    store = _keyed(tmp_path)
    good = store.save(GROUP, TASK, b"good")
    old = _folder(tmp_path) / f"000000000002-{'0' * 64}.ckpt"
    blob = b"CWCKPT1\n" + b'{"created_at":1,"group":"g","meta":{},"seq":2,"size":1,"task":"t"}\nx'
    old = old.with_name(f"000000000002-{hashlib.sha256(blob).hexdigest()}.ckpt")
    old.write_bytes(blob)
    ref = CheckpointRef(old.as_uri(), GROUP, TASK, 2, old.name[13:77], 1, 1, {})
    with pytest.raises(CheckpointError, match="format version 1; this chainwatch reads "
                                              "version 2"):
        store.load(ref)
    assert store.list(GROUP, TASK) == [good]


# -- the scorer's restore path: nothing forged is unpickled, a foreign checkpoint is refused --


class _Payload:
    """A pickle that, when loaded, creates ``marker``: the forger's code running."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return (Path.touch, (self.marker,))


class _FakeProducer:
    def __init__(self, slow_s: float = 0.0) -> None:
        self.slow_s = slow_s  # each flush takes this long, or times out if given less
        self.flushes: list[float | None] = []

    def flush(self, timeout: float | None = None) -> None:
        self.flushes.append(timeout)
        if timeout is not None and timeout < self.slow_s:
            time.sleep(timeout)
            raise KafkaTimeoutError(f"Failed to flush buffered records within {timeout} secs")
        time.sleep(self.slow_s)

    def send(self, *args: object, **kwargs: object) -> None:
        pass


class _FakeConsumer:
    def __init__(self, assigned: set[TopicPartition], max_poll_interval_ms: int = 300_000,
                 ) -> None:
        self.assigned = assigned
        self.seeks: list[tuple[TopicPartition, int | None]] = []
        self.config = {"max_poll_interval_ms": max_poll_interval_ms}

    def assignment(self) -> set[TopicPartition]:
        return self.assigned

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.seeks.append((tp, offset))

    def seek_to_beginning(self, tp: TopicPartition) -> None:
        self.seeks.append((tp, None))

    def commit(self, offsets: object) -> None:
        pass


class _FakeScorer:
    """A scorer with the state protocol TaskManager relies on (Scorer.state / load_state):
    it sums the ints it is fed, exactly, beyond 64 bits."""

    def __init__(self) -> None:
        self.events = 0
        self.total = 2**70

    def process(self, record: int, source: dict[str, object]) -> list[object]:
        self.events += 1
        self.total += record
        return []

    def state(self) -> dict[str, object]:
        return {"v": 1, "events": self.events, "total": self.total}

    def load_state(self, saved: dict[str, object]) -> None:
        fields(saved, "fake scorer", 1, events=int, total=int)
        self.events, self.total = saved["events"], saved["total"]


def _scorer_settings(tmp_path: Path) -> Settings:
    """As a scorer is configured: from the environment (a key file of its own)."""
    return Settings.load(env={"CHAINWATCH_CHECKPOINT_URI": str(tmp_path / "ckpt"),
                              "CHAINWATCH_CHECKPOINT_KEY_FILE": str(tmp_path / "scorer.key")})


def _manager(settings: Settings, **kwargs: object) -> TaskManager:
    return TaskManager(settings, settings.checkpoint_store(),
                       kwargs.pop("producer", _FakeProducer()),  # type: ignore[arg-type]
                       scorer_factory=_FakeScorer, **kwargs)  # type: ignore[arg-type]


def _fed(records: int = 10) -> _FakeScorer:
    scorer = _FakeScorer()
    for i in range(records):
        scorer.process(i, {})
    return scorer


def _checkpointed(settings: Settings, binding: Binding | None = None,
                  offset: int = 10) -> TaskManager:
    """A task manager that has written one genuine checkpoint of task 0."""
    manager = _manager(settings, binding=binding)
    task = Task(0, _fed(), {settings.topics.dex: offset},  # type: ignore[arg-type]
                uncheckpointed=10)
    assert manager.checkpoint(_FakeConsumer(set()), task) is not None
    return manager


@pytest.fixture
def no_unpickling(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """pickle.loads in pipeline.state (the one place that unpickles) fails the test."""
    def loads(data: bytes, *args: object, **kwargs: object) -> object:
        pytest.fail("pipeline.state unpickled something")

    monkeypatch.setattr(state.pickle, "loads", loads)
    decoded: list[bytes] = []
    real = state.decode
    monkeypatch.setattr(state, "decode", lambda data: decoded.append(data) or real(data))
    return decoded


def _refused() -> float:
    return sum(s.value for m in REGISTRY.collect() if m.name == "chainwatch_checkpoints_refused"
               for s in m.samples if s.name.endswith("_total"))


def test_a_task_round_trips_through_its_checkpoint_exactly(tmp_path: Path) -> None:
    settings = _scorer_settings(tmp_path)
    manager = _checkpointed(settings)
    ref = manager.store.newest(settings.consumer_group, "p0000")
    assert ref is not None and ref.meta["state_format"] == 2 and ref.meta["events"] == 10
    task = _manager(settings)._restore(0)
    assert task.restored_from == ref and task.offsets == {settings.topics.dex: 10}
    assert isinstance(task.scorer, _FakeScorer)
    assert (task.scorer.events, task.scorer.total) == (10, 2**70 + 45)


def test_the_default_scorer_never_unpickles_a_forged_checkpoint(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, no_unpickling: list[bytes]) -> None:
    """A forged object with a valid digest name is refused on its tag: its bytes are never
    decoded, let alone unpickled (neither the old whole-graph pickle nor a state tree)."""
    settings = _scorer_settings(tmp_path)  # audit.verify_checkpoints is false
    assert not settings.audit.verify_checkpoints
    genuine = _checkpointed(settings).store.newest(settings.consumer_group, "p0000")
    assert genuine is not None
    marker = tmp_path / "forger-was-here"
    forgeries = [pickle.dumps(_Payload(marker)),
                 state.encode({"scorer": {"v": 1, "events": 0, "total": 1}, "offsets": {}})]
    for how, payload in zip(("no tag", "made-up tag"), forgeries, strict=True):
        forged = _forge(tmp_path / "ckpt", settings.consumer_group, "p0000", payload,
                        how=how, meta=genuine.meta)
        assert forged.seq > genuine.seq
    with caplog.at_level(logging.WARNING):
        task = _manager(settings)._restore(0)
    assert not marker.exists(), "the forger's pickle ran"
    assert task.restored_from == genuine and task.offsets == {settings.topics.dex: 10}
    assert not any(data in payload for data in no_unpickling for payload in forgeries)
    refusals = [r.getMessage() for r in caplog.records if "refusing" in r.getMessage()]
    assert len(refusals) == 2 and not any("\n" in r for r in refusals)
    assert all("authentication tag" in r for r in refusals)


def _previous_release(settings: Settings, marker: Path, offset: int = 20) -> CheckpointRef:
    """A checkpoint as the previous release wrote it, key-authenticated by the store's own
    save: a pickle of the whole scorer (a payload that would create ``marker``) under meta
    ``state_format`` 1."""
    store = settings.checkpoint_store()
    data = pickle.dumps({"format": 1, "scorer": _Payload(marker),
                         "offsets": {settings.topics.dex: offset}})
    meta = {"partition": 0, "offsets": {settings.topics.dex: offset}, "events": offset,
            "state_format": 1,
            "binding": Binding(settings.consumer_group,
                               dict.fromkeys((settings.topics.transactions, settings.topics.dex,
                                              settings.topics.trades,
                                              settings.topics.labels))).to_meta()}
    return store.save(settings.consumer_group, "p0000", data, meta)


@pytest.mark.parametrize("older", [True, False], ids=["falls-back", "starts-fresh"])
def test_a_checkpoint_of_the_previous_release_is_refused_in_one_line(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, no_unpickling: list[bytes],
        older: bool) -> None:
    settings = _scorer_settings(tmp_path)
    genuine = _checkpointed(settings).store.newest(settings.consumer_group, "p0000") \
        if older else None
    marker = tmp_path / "old-pickle-ran"
    old = _previous_release(settings, marker)
    assert settings.checkpoint_store().load(old).startswith(b"\x80")  # it verifies: a pickle
    before = _refused()
    manager = _manager(settings)
    consumer = _FakeConsumer({TopicPartition(settings.topics.dex, 0)})
    with caplog.at_level(logging.INFO):
        manager.assign(consumer, {0})
    assert manager.failure is None and not marker.exists()
    assert old.uri.encode() not in b"".join(no_unpickling)
    assert not any(data.startswith(b"\x80") for data in no_unpickling)  # never decoded
    assert _refused() == before + 1
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "\n" not in warnings[0], warnings
    assert "state is of format 1" in warnings[0] and "never unpickled" in warnings[0]
    task = manager.tasks[0]
    if older:
        assert "trying the previous one (seq 1)" in warnings[0]
        assert task.restored_from == genuine
        assert consumer.seeks == [(TopicPartition(settings.topics.dex, 0), 10)]
    else:
        assert "the task starts fresh" in warnings[0]
        assert task.restored_from is None and task.offsets == {}
        assert consumer.seeks == [(TopicPartition(settings.topics.dex, 0), None)]
    assert isinstance(task.scorer, _FakeScorer)


def test_any_single_byte_changed_in_a_real_checkpoint_is_refused(
        tmp_path: Path, no_unpickling: list[bytes]) -> None:
    """Header, body and tag: whichever byte changes, the object is refused by its digest
    or its tag before a byte of it is decoded, and nothing is unpickled."""
    settings = _scorer_settings(tmp_path)
    ref = _checkpointed(settings).store.newest(settings.consumer_group, "p0000")
    assert ref is not None
    path = tmp_path / "ckpt" / settings.consumer_group / "p0000" / ref.name
    original = path.read_bytes()
    body = state.MAGIC
    start = original.index(body)
    assert start > 0 and len(original) - start > checkpoints.TAG_SIZE
    positions = sorted(set(range(0, len(original), 7)) | set(range(start, start + 12))
                       | set(range(len(original) - checkpoints.TAG_SIZE - 2, len(original))))
    store = settings.checkpoint_store()
    no_unpickling.clear()
    for position in positions:
        for flip in (0x01, 0x80):
            damaged = bytearray(original)
            damaged[position] ^= flip
            path.write_bytes(bytes(damaged))
            with pytest.raises(CheckpointError):
                store.load(ref)  # the name's digest no longer matches
            renamed = path.with_name(
                f"{ref.seq:012d}-{hashlib.sha256(damaged).hexdigest()}.ckpt")
            path.rename(renamed)  # what a forger would do: fix the name's digest too
            assert _manager(settings)._restore(0).restored_from is None
            renamed.rename(path)
    path.write_bytes(original)
    assert no_unpickling == []  # nothing damaged was ever decoded
    assert _manager(settings)._restore(0).restored_from == ref


@pytest.mark.skipif(not hasattr(Scorer, "state"), reason="Scorer.state() has not landed yet")
def test_any_single_byte_changed_in_a_real_scorers_checkpoint_is_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same with the real Scorer, whose state holds river blobs: with a byte changed
    anywhere (a spread of positions over header, body and tag) nothing is unpickled."""
    from producers.synth import SynthConfig, SyntheticChain

    settings = _scorer_settings(tmp_path)
    scorer = Scorer()
    for block in SyntheticChain(SynthConfig(seed=5, blocks=40)).blocks():
        for record in (*block.transactions, *block.dex_events):
            scorer.process(record, {"topic": "t", "partition": 0, "offset": 0})
    manager = TaskManager(settings, settings.checkpoint_store(),
                          _FakeProducer())  # type: ignore[arg-type]
    ref = manager.checkpoint(_FakeConsumer(set()),
                             Task(0, scorer, {settings.topics.dex: 5}, uncheckpointed=5))
    assert ref is not None
    path = tmp_path / "ckpt" / settings.consumer_group / "p0000" / ref.name
    original = path.read_bytes()
    start, end = original.index(state.MAGIC), len(original) - checkpoints.TAG_SIZE
    assert original.find(b"river", start) > 0  # river blobs inside: pickles
    positions = sorted(set(range(0, len(original), max(len(original) // 200, 1)))
                       | set(range(0, start, 9)) | set(range(start, start + 16))
                       | set(range(end - 2, len(original))))
    monkeypatch.setattr(state.pickle, "loads", lambda *a, **k: pytest.fail("unpickled"))
    for position in positions:
        damaged = bytearray(original)
        damaged[position] ^= 0x10
        path.unlink()
        path = path.with_name(f"{ref.seq:012d}-{hashlib.sha256(damaged).hexdigest()}.ckpt")
        path.write_bytes(bytes(damaged))  # its name's digest fixed, as a forger would
        assert manager._restore(0).restored_from is None
    monkeypatch.undo()
    path.unlink()
    path = path.with_name(ref.name)
    path.write_bytes(original)
    restored = manager._restore(0)
    assert restored.restored_from == ref and restored.scorer.events == scorer.events


def test_a_checkpoint_whose_state_does_not_load_is_skipped_for_an_older_one(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    settings = _scorer_settings(tmp_path)
    genuine = _checkpointed(settings).store.newest(settings.consumer_group, "p0000")
    assert genuine is not None
    store = settings.checkpoint_store()
    for tree in ({"scorer": {"v": 9}, "offsets": {}}, {"scorer": {}, "offsets": {"t": "x"}}):
        store.save(settings.consumer_group, "p0000", state.encode(tree), genuine.meta)
    store.save(settings.consumer_group, "p0000", b"CWSTATE2\n\xc1", genuine.meta)
    store.save(settings.consumer_group, "p0000", pickle.dumps({}), genuine.meta)
    with caplog.at_level(logging.WARNING):
        task = _manager(settings)._restore(0)
    assert task.restored_from == genuine
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 4 and all("state does not load" in w for w in warnings[1:])
    assert "state is of format 2 by its meta, but its bytes carry no state header" \
        in warnings[0]
    assert "layout version 9" in warnings[3]


def test_a_store_without_key_or_audit_check_is_not_restored_from(tmp_path: Path) -> None:
    settings = _scorer_settings(tmp_path)
    with pytest.raises(CheckpointError, match="authenticated"):
        TaskManager(settings, CheckpointStore.from_uri(str(tmp_path / "ckpt")),
                    _FakeProducer())


BOUND = Binding("chainwatch-scorer", {"chain.transactions": "id-t", "chain.dex": "id-d",
                                      "chainwatch.labels": "id-l"}, "cluster-a")


@pytest.mark.parametrize(("now", "says"), [
    (Binding("chainwatch-scorer", {"other.tx": None, "other.dex": None, "other.labels": None},
             "cluster-a"), "written for topics chain.dex, chain.transactions"),
    (dataclasses.replace(BOUND, group="another-group"),
     "written by group 'chainwatch-scorer', not 'another-group'"),
    (dataclasses.replace(BOUND, cluster_id="cluster-b"), "cluster 'cluster-a', this is"),
    (dataclasses.replace(BOUND, topics={**BOUND.topics, "chain.dex": "id-new"}),
     "topic chain.dex has id id-new, not id-d"),
])
def test_a_checkpoint_of_another_run_is_refused_before_anything_is_read(
        tmp_path: Path, now: Binding, says: str) -> None:
    settings = _scorer_settings(tmp_path)
    _checkpointed(settings, binding=BOUND)
    manager = _manager(settings, binding=now)
    consumer = _FakeConsumer({TopicPartition(t, 0) for t in manager.topics})
    manager.assign(consumer, {0})
    assert isinstance(manager.failure, CheckpointMismatch)
    message = str(manager.failure)
    assert says in message and "\n" not in message
    assert "--checkpoints" in message and "--group" in message
    assert manager.tasks == {} and consumer.seeks == []  # not opened: no offset is used


def test_unknown_ids_are_not_compared_and_a_matching_run_restores(tmp_path: Path) -> None:
    settings = _scorer_settings(tmp_path)
    _checkpointed(settings, binding=BOUND)
    unknown = Binding(BOUND.group, dict.fromkeys(BOUND.topics), None)
    for now in (BOUND, unknown):
        manager = _manager(settings, binding=now)
        consumer = _FakeConsumer({TopicPartition("chain.dex", 0)})
        manager.assign(consumer, {0})
        assert manager.failure is None and consumer.seeks == [(TopicPartition("chain.dex", 0),
                                                               10)]


def test_an_unusable_local_store_is_one_error_at_open() -> None:
    with pytest.raises(CheckpointError) as info:
        CheckpointStore.from_uri("/proc/nope").open()
    assert "\n" not in str(info.value) and "--checkpoints" in str(info.value)


class _AwayBrokerConsumer(_FakeConsumer):
    def commit(self, offsets: object) -> None:
        raise KafkaConnectionError("111 ECONNREFUSED")


def test_a_checkpoint_survives_a_broker_that_refuses_the_offset_commit(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Step 4 is for lag monitoring: while the broker restarts, a failed commit is a warning
    and the checkpoint (which holds the offsets) stands."""
    settings = _scorer_settings(tmp_path)
    manager = _manager(settings)
    task = Task(0, _fed(), {settings.topics.dex: 10}, uncheckpointed=10)  # type: ignore[arg-type]
    with caplog.at_level(logging.WARNING):
        ref = manager.checkpoint(_AwayBrokerConsumer(set()), task)
    assert ref is not None and task.uncheckpointed == 0
    assert manager.store.newest(settings.consumer_group, "p0000") == ref
    assert any("committing offsets failed" in r.getMessage() for r in caplog.records)


def test_revocation_checkpoints_run_under_one_deadline(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Half of max_poll_interval_ms (2 s here) for all revoked tasks: each flush of a slow
    producer (0.4 s) gets the time left; the task whose flush would overrun, and the one
    whose checkpoint would start after the deadline, are released without one."""
    settings = _scorer_settings(tmp_path)
    producer = _FakeProducer(slow_s=0.4)
    manager = _manager(settings, producer=producer)
    for partition in range(3):
        manager.tasks[partition] = Task(partition, _fed(),  # type: ignore[arg-type]
                                        {settings.topics.dex: 10}, uncheckpointed=10)
    started = time.monotonic()
    with caplog.at_level(logging.WARNING):
        manager.release(_FakeConsumer(set(), max_poll_interval_ms=2000), {0, 1, 2})
    assert time.monotonic() - started < 1.35
    assert manager.tasks == {} and manager.checkpoints_written == 1
    store = manager.store
    assert [store.newest(settings.consumer_group, f"p000{p}") is not None
            for p in range(3)] == [True, False, False]
    timeouts = [t for t in producer.flushes if t is not None]
    assert len(timeouts) == 3 and timeouts == sorted(timeouts, reverse=True)
    assert timeouts[0] <= 1.0 and timeouts[2] < 0.4  # the third is the one that timed out
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 2 and not any("\n" in w for w in warnings)
    assert warnings[0].startswith("task p0001 released, its revocation checkpoint "
                                  "incomplete (KafkaTimeoutError: Failed to flush")
    assert "else no checkpoint (a fresh start)" in warnings[0]
    assert warnings[1].startswith("task p0002 released without a checkpoint: the "
                                  "revocation's 1 s are spent")


def test_release_does_not_checkpoint_a_task_with_nothing_new(tmp_path: Path) -> None:
    settings = _scorer_settings(tmp_path)
    producer = _FakeProducer()
    manager = _manager(settings, producer=producer)
    manager.tasks[0] = Task(0, _fed(), {})  # type: ignore[arg-type]
    manager.release(_FakeConsumer(set()), {0})
    assert manager.tasks == {} and producer.flushes == []


@pytest.mark.skipif(not hasattr(Scorer, "state"), reason="Scorer.state() has not landed yet")
def test_the_real_scorer_resumes_from_its_checkpoint_with_identical_alerts(
        tmp_path: Path) -> None:
    from producers.synth import SynthConfig, SyntheticChain

    chain = SyntheticChain(SynthConfig(seed=21, blocks=200))
    records = [r for b in chain.blocks() for r in (*b.transactions, *b.dex_events)]
    cut = len(records) // 2
    settings = _scorer_settings(tmp_path)
    manager = TaskManager(settings, settings.checkpoint_store(),
                          _FakeProducer())  # type: ignore[arg-type]
    scorer = Scorer()
    source = {"topic": settings.topics.dex, "partition": 0, "offset": 0}
    for record in records[:cut]:
        scorer.process(record, source)
    task = Task(0, scorer, {settings.topics.dex: cut}, uncheckpointed=cut)
    assert manager.checkpoint(_FakeConsumer(set()), task) is not None
    restored = TaskManager(settings, settings.checkpoint_store(),
                           _FakeProducer())._restore(0)  # type: ignore[arg-type]
    assert restored.restored_from is not None and restored.scorer is not scorer
    assert restored.scorer.events == scorer.events == cut
    ours = [a.to_json() for r in records[cut:] for a in scorer.process(r, source)]
    theirs = [a.to_json() for r in records[cut:] for a in restored.scorer.process(r, source)]
    assert ours == theirs and ours
