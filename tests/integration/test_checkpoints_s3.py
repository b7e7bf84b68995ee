"""The checkpoint store on S3: the durable broker's local S3 server (SeaweedFS ``weed mini``)."""

from __future__ import annotations

import hashlib
import logging
import socket
import time
import uuid
from collections.abc import Iterator

import pyarrow.fs as pafs
import pytest

from pipeline.broker.s3 import S3_BUCKET, S3_REGION, S3Server
from pipeline.checkpoints import CheckpointKey, CheckpointRef, CheckpointStore
from pipeline.errors import CheckpointError

pytestmark = pytest.mark.integration

GROUP, TASK = "chainwatch-scorer", "p0003"
BUCKET = "chainwatch-checkpoints"  # made by the test; S3_BUCKET is made by the server


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    server = S3Server.spawn(tmp_path_factory.mktemp("s3"))
    try:
        server.wait_ready(time.monotonic() + 30, 30)
        raw = _raw_fs(server, allow_bucket_creation=True)
        raw.create_dir(BUCKET)
        yield server
    finally:
        server.stop(10)


def _raw_fs(server: S3Server, **options: bool) -> pafs.S3FileSystem:
    """A plain pyarrow S3 client on the server, to play the tamperer."""
    return pafs.S3FileSystem(access_key=server.credentials["AWS_ACCESS_KEY_ID"],
                             secret_key=server.credentials["AWS_SECRET_ACCESS_KEY"],
                             endpoint_override=server.endpoint.removeprefix("http://"),
                             scheme="http", region=S3_REGION, **options)


def _store(server: S3Server, uri: str, secret: str | None = None,
           key: CheckpointKey | None = None) -> CheckpointStore:
    return CheckpointStore.from_uri(
        uri, s3_endpoint=server.endpoint, s3_region=S3_REGION,
        s3_access_key=server.credentials["AWS_ACCESS_KEY_ID"],
        s3_secret_key=secret or server.credentials["AWS_SECRET_ACCESS_KEY"], key=key)


@pytest.fixture(params=[S3_BUCKET, BUCKET])
def store(request: pytest.FixtureRequest, s3_server: S3Server) -> Iterator[CheckpointStore]:
    """A store under a fresh prefix, in the server's bucket and in one the test made."""
    with _store(s3_server, f"s3://{request.param}/ckpt-{uuid.uuid4().hex[:8]}") as opened:
        yield opened


def _save_three(store: CheckpointStore) -> list[CheckpointRef]:
    return [store.save(GROUP, TASK, f"state-{i}".encode() * 1000, {"offsets": {"p3": i}})
            for i in range(1, 4)]


def _key(ref: CheckpointRef) -> str:
    return ref.uri.removeprefix("s3://")


def test_save_list_load_on_s3(store: CheckpointStore, s3_server: S3Server) -> None:
    assert store.list(GROUP, TASK) == [] and store.newest(GROUP, TASK) is None
    refs = _save_three(store)
    assert [r.seq for r in refs] == [1, 2, 3]
    assert refs[0].uri == f"{store.uri}/{GROUP}/{TASK}/{refs[0].name}"
    assert store.list(GROUP, TASK) == refs and store.newest(GROUP, TASK) == refs[-1]
    assert store.load(refs[1]) == b"state-2" * 1000
    assert store.tasks(GROUP) == [TASK]
    raw = _raw_fs(s3_server)
    with raw.open_input_stream(_key(refs[0])) as stream:  # sha256 of the object is its name
        assert hashlib.sha256(stream.read()).hexdigest() == refs[0].sha256
    listed = raw.get_file_info(pafs.FileSelector(f"{store.uri[5:]}/{GROUP}/{TASK}"))
    assert sorted(info.base_name for info in listed) == [r.name for r in refs]  # nothing else


def test_tampered_and_truncated_objects_are_refused_with_fallback(
        store: CheckpointStore, s3_server: S3Server, caplog: pytest.LogCaptureFixture) -> None:
    refs = _save_three(store)
    raw = _raw_fs(s3_server)
    with raw.open_input_stream(_key(refs[-1])) as stream:
        blob = bytearray(stream.read())
    blob[-1] ^= 0x01
    with raw.open_output_stream(_key(refs[-1])) as out:
        out.write(bytes(blob))
    with pytest.raises(CheckpointError) as info:
        store.load(refs[-1])
    actual = hashlib.sha256(blob).hexdigest()
    assert refs[-1].sha256 in str(info.value) and actual in str(info.value)
    with raw.open_output_stream(_key(refs[1])) as out:  # as if an upload were cut short
        out.write(bytes(blob[:100]))
    with caplog.at_level(logging.WARNING, logger="pipeline.checkpoints"):
        assert store.load_newest_good(GROUP, TASK) == (refs[0], b"state-1" * 1000)
    assert caplog.text.count("skipping checkpoint") == 2


def test_untrusted_digest_is_refused_with_fallback(store: CheckpointStore) -> None:
    refs = _save_three(store)
    audit_log = {refs[0].sha256, refs[1].sha256}
    with pytest.raises(CheckpointError, match="not in the audit log"):
        store.load(refs[-1], trusted=audit_log.__contains__)
    assert store.load_newest_good(GROUP, TASK, audit_log.__contains__) == (
        refs[1], b"state-2" * 1000)


def test_prune_on_s3(store: CheckpointStore) -> None:
    refs = [store.save(GROUP, TASK, bytes([i])) for i in range(5)]
    assert store.prune(GROUP, TASK, keep=2) == [r.uri for r in refs[:3]]
    assert store.list(GROUP, TASK) == refs[3:]
    assert store.save(GROUP, TASK, b"next").seq == 6


def test_missing_bucket_and_wrong_key_are_clear_errors(s3_server: S3Server) -> None:
    with pytest.raises(CheckpointError, match=r"bucket .* does not exist"):
        _store(s3_server, "s3://no-such-bucket/ckpt").open()
    wrong = _store(s3_server, f"s3://{S3_BUCKET}/ckpt", secret="not-the-key")
    with pytest.raises(CheckpointError, match="could not") as info:
        wrong.save(GROUP, TASK, b"s")
    assert "not-the-key" not in str(info.value)
    assert "not-the-key" not in repr(wrong)


def test_a_keyed_store_on_s3_refuses_an_object_forged_without_the_key(
        store: CheckpointStore, s3_server: S3Server) -> None:
    key = CheckpointKey.generate()
    keyed = _store(s3_server, store.uri, key=key).open()
    good = keyed.save(GROUP, TASK, b"good" * 100)
    forged = store.save(GROUP, TASK, b"evil" * 100)  # write access and the layout, no key
    assert keyed.list(GROUP, TASK) == [good, forged]
    with pytest.raises(CheckpointError, match="no authentication tag"):
        keyed.load(forged)
    assert keyed.load_newest_good(GROUP, TASK) == (good, b"good" * 100)
    other = _store(s3_server, store.uri, key=CheckpointKey.generate())
    with pytest.raises(CheckpointError, match="tag does not verify"):
        other.load(good)


def test_an_unreachable_endpoint_is_one_error_at_open() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        endpoint = f"http://127.0.0.1:{sock.getsockname()[1]}"
    started = time.monotonic()
    with pytest.raises(CheckpointError) as info:
        CheckpointStore.from_uri("s3://bucket/x", s3_endpoint=endpoint, s3_access_key="a",
                                 s3_secret_key="b").open()
    assert time.monotonic() - started < 30
    assert endpoint in str(info.value) and "\n" not in str(info.value)
