from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.errors import ConfigError
from pipeline.settings import Settings, env_var


def test_defaults_match_architecture_topics() -> None:
    s = Settings.load(env={})
    assert s.topics.all() == {
        "transactions": "chain.transactions", "dex": "chain.dex", "trades": "market.trades",
        "labels": "chainwatch.labels", "alerts": "chainwatch.alerts",
        "checkpoints": "chainwatch.checkpoints", "audit": "chainwatch.audit",
        "dlq": "chainwatch.dlq",
    }


def test_precedence_file_then_env_then_flags(tmp_path: Path) -> None:
    f = tmp_path / "cw.toml"
    f.write_text('bootstrap_servers = "file:1"\nconsumer_group = "from-file"\n'
                 '[partitions]\ndex = 8\n[topics]\nalerts = "file.alerts"\n')
    env = {"CHAINWATCH_CONSUMER_GROUP": "from-env", "CHAINWATCH_BOOTSTRAP_SERVERS": "env:2"}
    s = Settings.load(config_file=f, env=env, overrides={"bootstrap_servers": "flag:3",
                                                         "metrics_port": None})
    assert s.bootstrap_servers == "flag:3"
    assert s.consumer_group == "from-env"
    assert s.partitions.dex == 8
    assert s.topics.alerts == "file.alerts"
    assert s.metrics_port == 0


def test_config_file_from_environment(tmp_path: Path) -> None:
    f = tmp_path / "cw.toml"
    f.write_text('client_id = "x"\n')
    assert Settings.load(env={"CHAINWATCH_CONFIG": str(f)}).client_id == "x"


def test_secrets_never_in_repr_or_str() -> None:
    s = Settings.load(env={env_var("security.sasl_password"): "hunter2",
                           env_var("security.protocol"): "SASL_SSL",
                           env_var("security.sasl_username"): "svc"})
    assert "hunter2" not in repr(s)
    assert "hunter2" not in str(s.security)
    conf = s.producer_config()
    assert conf["sasl_plain_password"] == "hunter2"
    assert conf["security_protocol"] == "SASL_SSL"


@pytest.mark.parametrize(("env", "message"), [
    ({"CHAINWATCH_METRICS_PORT": "abc"}, "metrics_port must be a whole number"),
    ({"CHAINWATCH_METRICS_PORT": "70000"}, "not a port"),
    ({"CHAINWATCH_BOOTSTRAP_SERVERS": "nohost"}, "not host:port"),
    ({"CHAINWATCH_PARTITIONS_DEX": "0"}, "partitions.dex must be at least 1"),
    ({"CHAINWATCH_SECURITY_PROTOCOL": "TLS"}, "security.protocol"),
])
def test_bad_values_say_what_is_wrong(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Settings.load(env=env)


def test_bad_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        Settings.load(config_file=tmp_path / "missing.toml", env={})
    bad = tmp_path / "bad.toml"
    bad.write_text("this is = = not toml")
    with pytest.raises(ConfigError, match="not valid TOML"):
        Settings.load(config_file=bad, env={})
    unknown = tmp_path / "unknown.toml"
    unknown.write_text("bootstrap = 'x:1'\n")
    with pytest.raises(ConfigError, match="unknown setting 'bootstrap'"):
        Settings.load(config_file=unknown, env={})


def test_consumer_config_commits_manually() -> None:
    conf = Settings.load(env={}).consumer_config("g1", max_poll_records=10)
    assert conf["enable_auto_commit"] is False
    assert conf["group_id"] == "g1"
    assert conf["max_poll_records"] == 10


def test_replace_by_dotted_name() -> None:
    s = Settings.load(env={}).replace(bootstrap_servers="h:1", partitions__dex=2)
    assert (s.bootstrap_servers, s.partitions.dex) == ("h:1", 2)


def test_metrics_bind_loopback_unless_configured() -> None:
    assert Settings.load(env={}).metrics_host == "127.0.0.1"
    assert Settings.load(env={"CHAINWATCH_METRICS_HOST": "0.0.0.0"}).metrics_host == "0.0.0.0"
