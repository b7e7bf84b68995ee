"""``chainwatch score`` refusing, as a user types it: one line on stderr, exit status 2, before
it reads a record. An unusable checkpoint store, a checkpoint folder left by another run; and
a forged checkpoint in the store, which the scorer skips (never unpickles) and says so."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
from pathlib import Path

import pytest

from pipeline.broker import LocalBroker
from pipeline.checkpoints import CheckpointStore
from pipeline.records import ChainRecord
from pipeline.settings import Settings
from pipeline.topics import ensure_topics
from producers.sink import KafkaSink
from producers.synth import SynthConfig, SyntheticChain
from tests.conftest import CHAINWATCH, cli_env, free_port

pytestmark = pytest.mark.e2e

NOWHERE = f"127.0.0.1:{free_port()}"  # no broker: the store must fail first


def score(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CHAINWATCH, "score", *args], capture_output=True, text=True,
                          timeout=180, env=env, check=False)


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The user's environment, without cloud credentials, with a key file of this test's own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "CHAINWATCH_"))}
    return env | {"CHAINWATCH_CHECKPOINT_KEY_FILE": str(tmp_path / "checkpoint.key"),
                  "AWS_EC2_METADATA_DISABLED": "true"} | extra


def _one_line_error(result: subprocess.CompletedProcess[str], banner: bool = False) -> str:
    """The error line of a refused start: the only line on stderr, or with ``banner`` the
    only one besides the start-up status lines a scorer that reached Kafka prints first."""
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("chainwatch score: error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], result.stderr
    if banner:
        assert all(line.startswith("chainwatch score: ") and "warning" not in line.lower()
                   for line in lines) and len(lines) <= 3, result.stderr
    else:
        assert len(lines) == 1, result.stderr
    assert result.stdout == ""  # no summary: nothing was scored
    return errors[0]


# -- an unusable checkpoint store ---------------------------------------------------------------


def test_a_checkpoint_directory_that_cannot_be_made_is_one_line(tmp_path: Path) -> None:
    line = _one_line_error(score("--checkpoints", "/proc/nope", "--bootstrap", NOWHERE,
                                 env=_env(tmp_path)))
    assert "/proc/nope" in line and "--checkpoints" in line  # what, and what to do


def test_s3_without_an_endpoint_is_one_line(tmp_path: Path) -> None:
    line = _one_line_error(score("--checkpoints", "s3://bucket/x", "--bootstrap", NOWHERE,
                                 env=_env(tmp_path)))
    assert "s3://bucket/x" in line and "CHAINWATCH_STORAGE_S3_ENDPOINT" in line


def test_s3_with_an_unreachable_endpoint_is_one_line(tmp_path: Path) -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"
    line = _one_line_error(score("--checkpoints", "s3://bucket/x", "--bootstrap", NOWHERE,
                                 env=_env(tmp_path, CHAINWATCH_STORAGE_S3_ENDPOINT=endpoint)))
    assert endpoint in line and "answers" in line


# -- checkpoints of another run; forged checkpoints ----------------------------------------------


def _produce(settings: Settings, blocks: int, seed: int = 11) -> int:
    ensure_topics(settings)
    count = 0
    with KafkaSink(settings) as sink:
        for block in SyntheticChain(SynthConfig(seed=seed, blocks=blocks)).blocks():
            records: list[ChainRecord] = [*block.transactions, *block.dex_events]
            for record in records:
                sink.write(record)
                count += 1
    return count


def _scored(settings: Settings, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return score("--until-caught-up", "--json", "--checkpoint-every", "200", *args,
                 env=_env(tmp_path) | {k: v for k, v in cli_env(settings).items()
                                       if k.startswith("CHAINWATCH_")})


def test_a_checkpoint_folder_of_another_cluster_is_refused_and_no_record_is_skipped(
        settings: Settings, tmp_path: Path) -> None:
    produced = _produce(settings, blocks=60)
    first = _scored(settings, tmp_path)
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["consumed"] == produced
    # the same topic names, group and checkpoint folder, on another broker with more records:
    # the old offsets would skip the first `produced` records of each partition there
    with LocalBroker() as other:
        elsewhere = settings.replace(bootstrap_servers=other.bootstrap)
        more = _produce(elsewhere, blocks=120, seed=12)
        line = _one_line_error(_scored(elsewhere, tmp_path), banner=True)
        assert "is from another run" in line and "has id" in line
        assert "--checkpoints" in line and "--group" in line  # what to do
        fresh = _scored(elsewhere, tmp_path, "--checkpoints", str(tmp_path / "fresh"))
        assert fresh.returncode == 0, fresh.stderr
        assert json.loads(fresh.stdout)["consumed"] == more  # all of them: none skipped


def test_a_checkpoint_folder_of_other_topics_is_refused(settings: Settings,
                                                        tmp_path: Path) -> None:
    _produce(settings, blocks=40)
    assert _scored(settings, tmp_path).returncode == 0
    renamed = settings.replace(topics__transactions=settings.topics.transactions + "-b",
                               topics__dex=settings.topics.dex + "-b",
                               topics__labels=settings.topics.labels + "-b")
    _produce(renamed, blocks=40)
    line = _one_line_error(_scored(renamed, tmp_path), banner=True)
    assert f"written for topics {settings.topics.dex}" in line


class _Payload:
    """Unpickling this creates ``marker``: the forger's code running in the scorer."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return (Path.touch, (self.marker,))


def test_the_default_scorer_skips_a_forged_checkpoint_and_never_runs_it(
        settings: Settings, tmp_path: Path) -> None:
    _produce(settings, blocks=40)
    assert _scored(settings, tmp_path).returncode == 0  # genuine checkpoints of every task
    marker = tmp_path / "forger-was-here"
    forger = CheckpointStore.from_uri(settings.checkpoint_uri)  # write access, no key
    tasks = forger.tasks(settings.consumer_group)
    assert tasks
    for task in tasks:
        genuine = forger.newest(settings.consumer_group, task)
        assert genuine is not None
        forged = forger.save(settings.consumer_group, task, pickle.dumps(_Payload(marker)),
                             genuine.meta)  # a valid digest name, the genuine offsets
        assert forged.seq == genuine.seq + 1
    again = _scored(settings, tmp_path)  # audit.verify_checkpoints is false: the default
    assert again.returncode == 0, again.stderr
    assert not marker.exists(), "the forged pickle ran in the scorer"
    assert json.loads(again.stdout)["consumed"] == 0  # restored from the genuine ones
    refusals = [line for line in again.stderr.splitlines() if "refusing checkpoint" in line]
    assert len(refusals) == len(tasks) and all("authentication tag" in r for r in refusals)
    assert "Traceback" not in again.stderr
