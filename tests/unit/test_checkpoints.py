"""The checkpoint store on a local directory: layout, atomicity, digests, trust, pruning."""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
import re
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest

from pipeline import checkpoints
from pipeline.checkpoints import CheckpointRef, CheckpointStore
from pipeline.errors import ChainwatchError, CheckpointError
from pipeline.settings import Secret

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
    assert len(store.prune(GROUP, TASK, keep=0)) == 4 and store.list(GROUP, TASK) == []
    with pytest.raises(CheckpointError, match="keep"):
        store.prune(GROUP, TASK, keep=-1)


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
