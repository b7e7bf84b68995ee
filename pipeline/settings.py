"""One typed settings object, the only place that builds client configuration.

Values come from, lowest precedence first:

1. the defaults below,
2. a TOML file (``--config FILE`` or ``CHAINWATCH_CONFIG``),
3. ``CHAINWATCH_*`` environment variables,
4. command-line flags.

Every setting has a dotted name; its environment variable is ``CHAINWATCH_`` plus the name
upper-cased with dots as underscores, and in TOML the part before the dot is a table::

    bootstrap_servers = "kafka-1:9092,kafka-2:9092"      # CHAINWATCH_BOOTSTRAP_SERVERS
    [security]
    protocol = "SASL_SSL"                                 # CHAINWATCH_SECURITY_PROTOCOL
    sasl_password = "..."                                 # CHAINWATCH_SECURITY_SASL_PASSWORD
    [partitions]
    dex = 8                                               # CHAINWATCH_PARTITIONS_DEX
    [alerts]
    store = "postgresql://cw@db/chainwatch"               # CHAINWATCH_ALERTS_STORE

Rules (detectors) are configured in the file only, one table each (see :mod:`pipeline.rules`)::

    [detectors.wash_trading]
    enabled = false                                       # a built-in, disabled
    [detectors.big_gas]
    class = "mydetectors:GasSpike"                        # a user's detector
    on = "transactions"
    threshold = 0.8
    params = { factor = 5 }

Secrets are held in :class:`Secret`, whose ``repr`` and ``str`` never show the value.

>>> s = Settings.load(env={"CHAINWATCH_SECURITY_SASL_PASSWORD": "hunter2"})
>>> "hunter2" in repr(s)
False
>>> s.topics.dex
'chain.dex'
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.checkpoints import CheckpointKey, CheckpointStore
from pipeline.errors import ConfigError
from pipeline.rules.spec import check_table
from pipeline.secret import Secret

ENV_PREFIX = "CHAINWATCH_"
LOG_FORMATS = ("text", "json")
TRANSACTIONS = ("auto", "on", "off")


@dataclass(frozen=True)
class Security:
    """How clients authenticate to a real cluster (PLAINTEXT for the local broker)."""

    protocol: str = "PLAINTEXT"  # PLAINTEXT | SSL | SASL_PLAINTEXT | SASL_SSL
    sasl_mechanism: str = ""  # PLAIN | SCRAM-SHA-256 | SCRAM-SHA-512
    sasl_username: str = ""
    sasl_password: Secret = field(default_factory=lambda: Secret(""))
    ssl_cafile: str = ""
    ssl_certfile: str = ""
    ssl_keyfile: str = ""
    ssl_password: Secret = field(default_factory=lambda: Secret(""))


@dataclass(frozen=True)
class Topics:
    """Topic names of architecture.md."""

    transactions: str = "chain.transactions"
    dex: str = "chain.dex"
    trades: str = "market.trades"
    labels: str = "chainwatch.labels"
    alerts: str = "chainwatch.alerts"
    checkpoints: str = "chainwatch.checkpoints"
    audit: str = "chainwatch.audit"
    dlq: str = "chainwatch.dlq"

    def all(self) -> dict[str, str]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


@dataclass(frozen=True)
class Partitions:
    """Partition count of each topic. The audit topic has one: it is a single sequence."""

    transactions: int = 4
    dex: int = 4
    trades: int = 4
    labels: int = 4
    alerts: int = 4
    checkpoints: int = 4
    audit: int = 1
    dlq: int = 1


@dataclass(frozen=True)
class Storage:
    """Options of the checkpoint store for ``s3://bucket/prefix`` URIs (pyarrow.fs)."""

    s3_endpoint: str = ""  # e.g. http://127.0.0.1:8333 for a local S3 server; empty: AWS
    s3_region: str = "us-east-1"
    s3_access_key: Secret = field(default_factory=lambda: Secret(""))
    s3_secret_key: Secret = field(default_factory=lambda: Secret(""))


@dataclass(frozen=True)
class Audit:
    """The audit log (``chainwatch audit``) and whether scorers check checkpoints against it."""

    store: str = "chainwatch-data/audit.db"  # the SQLite file of the log
    key: str = ""  # the auditor's Ed25519 private key; empty: <store>.key, made on first use
    public_key: str = ""  # the key heads must be signed with (PEM file or hex); empty: <key>.pub
    verify_checkpoints: bool = False  # scorers restore only checkpoints the log holds
    # the auditor's HTTP endpoint (http://host:port of `audit serve --metrics-port`): scorers
    # ask it for heads and proofs instead of opening the store; empty: read audit.store
    url: str = ""
    anchor_key: Secret = field(default_factory=lambda: Secret(""))  # signs `audit anchor`


@dataclass(frozen=True)
class Alerts:
    """The alert store (``chainwatch alerts``): where the sink keeps every alert."""

    store: str = "chainwatch-data/alerts.db"  # a SQLite path, sqlite:///PATH or postgresql://…
    context_records: int = 5000  # records before an alert read back for its chart (0: none)


@dataclass(frozen=True)
class Ui:
    """The web view (``chainwatch ui``) and who may use it."""

    host: str = "127.0.0.1"  # beyond loopback only with a token or a username and password
    port: int = 8600
    token: Secret = field(default_factory=lambda: Secret(""))  # a bearer token, when set
    username: str = ""  # basic authentication, with password
    password: Secret = field(default_factory=lambda: Secret(""))


@dataclass(frozen=True)
class Notify:
    """Webhook notifications of alerts (``chainwatch alerts notify``)."""

    webhook_url: Secret = field(default_factory=lambda: Secret(""))  # a Slack URL is a secret
    format: str = "json"  # json (the alert) or slack (a Slack-compatible message)
    min_severity: str = "medium"  # info, low, medium, high or critical
    retries: int = 5  # attempts after the first, with exponential backoff
    backoff_ms: int = 500  # the first wait; doubled after each failed attempt
    timeout_ms: int = 5000  # one attempt


@dataclass(frozen=True)
class Settings:
    """Everything a chainwatch service needs to know about its surroundings."""

    bootstrap_servers: str = "127.0.0.1:9092"
    client_id: str = "chainwatch"
    consumer_group: str = "chainwatch-scorer"
    checkpoint_uri: str = "chainwatch-data/checkpoints"
    # the key that authenticates checkpoints, made on first use; shared by a group's scorers
    checkpoint_key_file: str = "chainwatch-data/checkpoint.key"
    metrics_port: int = 0  # 0: no metrics server
    metrics_host: str = "127.0.0.1"  # the metrics server's address; 0.0.0.0: every interface
    log_format: str = "text"  # text (for people) or json (one object a line)
    # Kafka transactions for exactly-once output: auto (when the broker isolates them: Apache
    # Kafka yes, Tansu no), on (required), off (idempotent sinks only)
    transactions: str = "auto"
    security: Security = field(default_factory=Security)
    topics: Topics = field(default_factory=Topics)
    partitions: Partitions = field(default_factory=Partitions)
    storage: Storage = field(default_factory=Storage)
    audit: Audit = field(default_factory=Audit)
    alerts: Alerts = field(default_factory=Alerts)
    ui: Ui = field(default_factory=Ui)
    notify: Notify = field(default_factory=Notify)
    # the file's [detectors.NAME] tables, as written (pipeline.rules.RuleSet.load reads them)
    detectors: Mapping[str, Mapping[str, Any]] = field(default_factory=dict, hash=False)

    # -- loading ---------------------------------------------------------------------------

    @classmethod
    def load(
        cls,
        config_file: str | os.PathLike[str] | None = None,
        env: Mapping[str, str] | None = None,
        overrides: Mapping[str, Any] | None = None,
    ) -> Settings:
        """Defaults, then the TOML file, then ``CHAINWATCH_*`` variables, then ``overrides``.

        ``overrides`` maps dotted names to values (``None`` values are ignored, so CLI flags
        that were not given can be passed straight through).
        """
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        detectors: dict[str, Any] = {}
        path = config_file or env.get(ENV_PREFIX + "CONFIG")
        if path:
            flat, detectors = _read_toml(Path(path))
            values.update(flat)
        for name, _ in _fields():
            var = env_var(name)
            if var in env:
                values[name] = env[var]
        for name, value in (overrides or {}).items():
            if value is not None:
                values[name] = value
        return cls._build(values, detectors)

    def replace(self, **dotted: Any) -> Settings:
        """A copy with some settings changed, by dotted name (``{"partitions.dex": 8}``)."""
        values = {name: _get(self, name) for name, _ in _fields()}
        values.update({k.replace("__", "."): v for k, v in dotted.items()})
        return self._build(values, self.detectors)

    @classmethod
    def _build(cls, values: Mapping[str, Any],
               detectors: Mapping[str, Any] | None = None) -> Settings:
        known = dict(_fields())
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ConfigError(
                f"unknown setting {unknown[0]!r}; known settings are: {', '.join(sorted(known))}"
            )
        groups: dict[str, dict[str, Any]] = {}
        top: dict[str, Any] = {}
        for name, raw in values.items():
            value = _coerce(name, known[name], raw)
            head, _, tail = name.partition(".")
            if tail:
                groups.setdefault(head, {})[tail] = value
            else:
                top[name] = value
        for head, kwargs in groups.items():
            top[head] = _NESTED[head](**kwargs)
        if detectors is not None:
            if not isinstance(detectors, Mapping):
                raise ConfigError("detectors must be tables: [detectors.NAME] with class, on, "
                                  "threshold or quantile, params")
            for name, table in detectors.items():
                check_table(name, table)
            top["detectors"] = dict(detectors)
        settings = cls(**top)
        settings._validate()
        return settings

    def _validate(self) -> None:
        if not self.bootstrap_servers.strip():
            raise ConfigError("bootstrap_servers is empty; give host:port, e.g. 127.0.0.1:9092")
        for server in self.bootstrap_servers.split(","):
            host, _, port = server.strip().rpartition(":")
            if not host or not port.isdigit():
                raise ConfigError(
                    f"bootstrap server {server.strip()!r} is not host:port, e.g. 127.0.0.1:9092"
                )
        if not self.alerts.store.strip():
            raise ConfigError("alerts.store is empty; give a file path, sqlite:///PATH or "
                              "postgresql://USER:PASSWORD@HOST/DB")
        if self.alerts.context_records < 0:
            raise ConfigError(f"alerts.context_records {self.alerts.context_records} is "
                              "negative; give 0 (no charts) or a number of records")
        if not self.checkpoint_key_file.strip():
            raise ConfigError("checkpoint_key_file is empty; give the path of the checkpoint "
                              "key file (made on first use)")
        if not 0 <= self.metrics_port <= 65535:
            raise ConfigError(f"metrics_port {self.metrics_port} is not a port (0-65535)")
        if self.log_format not in LOG_FORMATS:
            raise ConfigError(f"log_format {self.log_format!r} is not one of "
                              f"{', '.join(LOG_FORMATS)}")
        if self.transactions not in TRANSACTIONS:
            raise ConfigError(f"transactions {self.transactions!r} is not one of "
                              f"{', '.join(TRANSACTIONS)}")
        if self.audit.url and not self.audit.url.startswith(("http://", "https://")):
            raise ConfigError(f"audit.url {self.audit.url!r} is not an http:// or https:// "
                              "URL, e.g. http://auditor:9102")
        for f in dataclasses.fields(Partitions):
            if getattr(self.partitions, f.name) < 1:
                raise ConfigError(f"partitions.{f.name} must be at least 1")
        protocols = {"PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"}
        if self.security.protocol not in protocols:
            raise ConfigError(
                f"security.protocol {self.security.protocol!r} is not one of "
                f"{', '.join(sorted(protocols))}"
            )

    # -- client configuration: nothing else builds these dicts -------------------------------

    def checkpoint_store(self) -> CheckpointStore:
        """The checkpoint store of ``checkpoint_uri`` (a directory, or s3://bucket/prefix),
        authenticating with the key in ``checkpoint_key_file`` (made there on first use)."""
        st = self.storage
        return CheckpointStore.from_uri(
            self.checkpoint_uri, s3_endpoint=st.s3_endpoint or None,
            s3_access_key=st.s3_access_key.get() or None,
            s3_secret_key=st.s3_secret_key.get() or None, s3_region=st.s3_region,
            key=CheckpointKey.load_or_create(self.checkpoint_key_file))

    def _common(self) -> dict[str, Any]:
        conf: dict[str, Any] = {
            "bootstrap_servers": [s.strip() for s in self.bootstrap_servers.split(",")],
            "client_id": self.client_id,
            "security_protocol": self.security.protocol,
            "bootstrap_timeout_ms": 10_000,  # fail fast with a clear message, not after 30 s
        }
        sec = self.security
        if sec.protocol.startswith("SASL"):
            conf["sasl_mechanism"] = sec.sasl_mechanism or "PLAIN"
            conf["sasl_plain_username"] = sec.sasl_username
            conf["sasl_plain_password"] = sec.sasl_password.get()
        if sec.protocol.endswith("SSL"):
            for key in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
                if getattr(sec, key):
                    conf[key] = getattr(sec, key)
            if sec.ssl_password:
                conf["ssl_password"] = sec.ssl_password.get()
        return conf

    def admin_config(self) -> dict[str, Any]:
        return self._common() | {"request_timeout_ms": 15_000}

    def producer_config(self, **overrides: Any) -> dict[str, Any]:
        """Durable, ordered, compressed and batched by default."""
        conf = self._common() | {
            "acks": "all",
            "enable_idempotence": True,
            "compression_type": "zstd",
            "linger_ms": 20,
            "batch_size": 256 * 1024,
            "max_in_flight_requests_per_connection": 5,
        }
        return conf | overrides

    def consumer_config(self, group_id: str | None = None, **overrides: Any) -> dict[str, Any]:
        """Manual commits only: offsets are committed after state is safe (see checkpoints)."""
        conf = self._common() | {
            "group_id": group_id or self.consumer_group,
            "enable_auto_commit": False,
            "auto_offset_reset": "earliest",
            "max_poll_records": 2000,
            "max_poll_interval_ms": 300_000,
            "session_timeout_ms": 10_000,
            "heartbeat_interval_ms": 3_000,
            "fetch_max_wait_ms": 25,  # a quiet topic answers fast: low latency at low rates
            # only what transactions committed (all records on a non-transactional topic);
            # Tansu ignores it and shows aborted records too (tests/integration/
            # test_broker_defects.py)
            "isolation_level": "read_committed",
            # full fetch responses: with incremental fetch sessions (Apache Kafka) a partition
            # without new records is left out of them, so a partition assigned afresh (after a
            # rebalance) that has no records never gets a high-water mark, and lag and
            # caught_up(), which read it (pipeline/lag.py), would wait forever
            "enable_incremental_fetch_sessions": False,
        }
        return conf | overrides


_NESTED: dict[str, type[Security] | type[Topics] | type[Partitions] | type[Storage]
              | type[Audit] | type[Alerts] | type[Ui] | type[Notify]] = {
    "security": Security,
    "topics": Topics,
    "partitions": Partitions,
    "storage": Storage,
    "audit": Audit,
    "alerts": Alerts,
    "ui": Ui,
    "notify": Notify,
}
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})


def env_var(name: str) -> str:
    """The environment variable of a dotted setting name."""
    return ENV_PREFIX + name.upper().replace(".", "_")


def _fields() -> Iterator[tuple[str, type]]:
    """(dotted name, type) of every leaf setting."""
    for f in dataclasses.fields(Settings):
        if f.name == "detectors":  # tables of their own, not dotted settings
            continue
        nested = _NESTED.get(f.name)
        if nested is None:
            yield f.name, _TYPES[f.name]
        else:
            default = nested()
            for sub in dataclasses.fields(nested):
                yield f"{f.name}.{sub.name}", type(getattr(default, sub.name))


_TYPES: dict[str, type] = {
    "bootstrap_servers": str,
    "client_id": str,
    "consumer_group": str,
    "checkpoint_uri": str,
    "checkpoint_key_file": str,
    "metrics_port": int,
    "metrics_host": str,
    "log_format": str,
    "transactions": str,
}


def _get(settings: Settings, name: str) -> Any:
    obj: Any = settings
    for part in name.split("."):
        obj = getattr(obj, part)
    return obj


def _coerce(name: str, kind: type, raw: Any) -> Any:
    if kind is Secret:
        return raw if isinstance(raw, Secret) else Secret(str(raw))
    if kind is bool:
        if isinstance(raw, bool):
            return raw
        text = str(raw).strip().lower()
        if text in _TRUE or text in _FALSE:
            return text in _TRUE
        raise ConfigError(f"setting {name} must be true or false, not {raw!r}")
    if kind is int:
        if isinstance(raw, bool):
            raise ConfigError(f"setting {name} must be a whole number, not {raw!r}")
        try:
            return int(raw)
        except (TypeError, ValueError):
            raise ConfigError(f"setting {name} must be a whole number, not {raw!r}") from None
    if not isinstance(raw, str):
        raise ConfigError(f"setting {name} must be a string, not {raw!r}")
    return raw


def _read_toml(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The file's settings by dotted name, and its ``[detectors.NAME]`` tables."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist; check the path") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    flat: dict[str, Any] = {}
    detectors = data.pop("detectors", {})
    for key, value in data.items():
        if isinstance(value, dict):
            for sub, subvalue in value.items():
                flat[f"{key}.{sub}"] = subvalue
        else:
            flat[key] = value
    return flat, detectors
