"""What the Kafka engine runs: a Java runtime (17 or newer) and Apache Kafka's jars, fetched
once from Maven Central into a cache directory and checked against a lock file.

The cache directory (``home``)
    ``$CHAINWATCH_KAFKA_HOME`` if set, else ``$XDG_CACHE_HOME/chainwatch/kafka-4.1.1``
    (``~/.cache/…`` without XDG_CACHE_HOME). It holds ``libs/`` (the jars the broker runs),
    ``m2/`` (Maven's local repository) and ``fetch.log``.
Fetching
    :func:`fetch` runs Maven on the POM shipped beside this module (``kafka-runtime/pom.xml``)
    with strict checksums (``-C``: a download whose SHA-1 differs from the repository's fails),
    copies the jars into a fresh directory, checks them against ``kafka-runtime/jars.sha256``
    and only then moves them to ``libs/``.
Checking
    :func:`verify_jars` hashes every jar before each start: ``libs/`` must hold exactly the
    jars of the lock file, each with its SHA-256, else :class:`ChecksumMismatch` in one line.
    The broker's class path names those jars one by one.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from pipeline.broker.kafka_config import KAFKA_VERSION
from pipeline.errors import BrokerBinaryNotFound, BrokerError, ChecksumMismatch

KAFKA_HOME_ENV = "CHAINWATCH_KAFKA_HOME"
RUNTIME_DIR = Path(__file__).with_name("kafka-runtime")
POM = RUNTIME_DIR / "pom.xml"
LOCK_FILE = RUNTIME_DIR / "jars.sha256"
LOG4J_CONFIG = RUNTIME_DIR / "log4j2.properties"
MIN_JAVA = 17
FETCH_HINT = "chainwatch broker --engine kafka --fetch"
_FETCH_TIMEOUT_S = 900.0
_LOCK_LINE = re.compile(r"([0-9a-f]{64}) [ *]([\w.+-]+\.jar)")


def default_home(env: Mapping[str, str] | None = None) -> Path:
    """The cache directory: ``$CHAINWATCH_KAFKA_HOME``, else under the XDG cache directory."""
    env = os.environ if env is None else env
    if env.get(KAFKA_HOME_ENV):
        return Path(env[KAFKA_HOME_ENV]).expanduser().absolute()
    cache_root = Path(env["XDG_CACHE_HOME"]) if env.get("XDG_CACHE_HOME") else (
        Path(env.get("HOME") or Path.home()) / ".cache")
    return (cache_root / "chainwatch" / f"kafka-{KAFKA_VERSION}").absolute()


# --- the lock file ---------------------------------------------------------------------------


def read_lock(path: Path | None = None) -> dict[str, str]:
    """Jar name → SHA-256 (hex) from a ``sha256sum``-style file (default: the shipped
    ``jars.sha256``); ``#`` lines are comments."""
    path = path if path is not None else LOCK_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise BrokerError(f"the Kafka engine's lock file {path} is unreadable ({exc}); "
                          "reinstall chainwatch") from exc
    locked: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        match = _LOCK_LINE.fullmatch(line.strip())
        if match is None:
            raise BrokerError(f"{path}:{number} is not `<sha256>  <name>.jar`; reinstall "
                              "chainwatch")
        locked[match.group(2)] = match.group(1)
    if not locked:
        raise BrokerError(f"{path} lists no jar; reinstall chainwatch")
    return locked


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_jars(libs: Path, lock: Path | None = None) -> list[Path]:
    """The jars of ``libs``, in the lock file's order, once each has the SHA-256 it locks.

    Raises BrokerBinaryNotFound when ``libs`` is missing or incomplete, ChecksumMismatch when a
    jar differs or one the lock does not list is there; each in one line.
    """
    lock = lock if lock is not None else LOCK_FILE
    locked = read_lock(lock)
    if not libs.is_dir():
        raise BrokerBinaryNotFound(f"Kafka {KAFKA_VERSION}'s jars are not in {libs}; fetch "
                                   f"them with `{FETCH_HINT}`")
    present = {path.name for path in libs.glob("*.jar")}
    missing = sorted(set(locked) - present)
    if missing:
        raise BrokerBinaryNotFound(
            f"{libs} lacks {len(missing)} of Kafka {KAFKA_VERSION}'s jars ({missing[0]}, …); "
            f"fetch them again with `{FETCH_HINT}`")
    extra = sorted(present - set(locked))
    if extra:
        raise ChecksumMismatch(
            f"{libs} holds {extra[0]}, which {lock.name} does not list; delete {libs} and "
            f"fetch again with `{FETCH_HINT}`")
    for name, expected in locked.items():
        actual = sha256_of(libs / name)
        if actual != expected:
            raise ChecksumMismatch(
                f"checksum mismatch: {libs / name} has SHA-256 {actual[:16]}…, {lock.name} "
                f"locks {expected[:16]}…; delete {libs.parent} and fetch again with "
                f"`{FETCH_HINT}`")
    return [libs / name for name in locked]


# --- Java and Maven --------------------------------------------------------------------------


@cache
def _java_version_text(java: str) -> str:
    """What ``java -version`` prints (it prints on stderr), or "" if it fails."""
    try:
        result = subprocess.run([java, "-version"], capture_output=True, text=True,
                                timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BrokerBinaryNotFound(f"cannot run {java} -version ({exc}); install Java "
                                   f"{MIN_JAVA} or newer, or set JAVA_HOME to one") from exc
    return result.stderr + result.stdout if result.returncode == 0 else ""


def _java_major(java: str) -> int:
    match = re.search(r'version "(\d+)(?:\.(\d+))?', _java_version_text(java))
    if match is None:
        raise BrokerBinaryNotFound(f"{java} -version does not say which Java it is; install "
                                   f"Java {MIN_JAVA} or newer, or set JAVA_HOME to one")
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major  # "1.8.0" is Java 8


def find_java(env: Mapping[str, str] | None = None) -> str:
    """The ``java`` to run Kafka with: ``$JAVA_HOME/bin/java``, else the one on PATH; Java 17
    or newer, else BrokerBinaryNotFound in one line."""
    env = os.environ if env is None else env
    if env.get("JAVA_HOME"):
        java = str(Path(env["JAVA_HOME"]) / "bin" / "java")
        if not os.access(java, os.X_OK):
            raise BrokerBinaryNotFound(
                f"JAVA_HOME={env['JAVA_HOME']} has no bin/java; point JAVA_HOME at a Java "
                f"{MIN_JAVA}+ installation or unset it to use the java on PATH")
    else:
        found = shutil.which("java", path=env.get("PATH", os.defpath))
        if found is None:
            raise BrokerBinaryNotFound(
                f"the Kafka engine needs Java {MIN_JAVA} or newer and there is no `java` on "
                "PATH; install one (e.g. Debian's openjdk-17-jre-headless) or set JAVA_HOME, "
                "or use --engine tansu")
        java = found
    major = _java_major(java)
    if major < MIN_JAVA:
        raise BrokerBinaryNotFound(
            f"{java} is Java {major}; Kafka {KAFKA_VERSION} needs Java {MIN_JAVA} or newer: "
            "install one and put it first on PATH or set JAVA_HOME")
    return java


def find_maven(env: Mapping[str, str] | None = None) -> str | None:
    env = os.environ if env is None else env
    return shutil.which("mvn", path=env.get("PATH", os.defpath))


# --- fetching --------------------------------------------------------------------------------


@contextlib.contextmanager
def _fetch_lock(home: Path) -> Iterator[None]:
    """One fetch at a time per cache directory (a second waits for the first)."""
    fd = os.open(home / ".fetch.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _jars_ok(libs: Path) -> bool:
    try:
        verify_jars(libs)
    except BrokerError:
        return False
    return True


def fetch(home: Path, maven: str | None = None) -> bool:
    """Put Kafka's checked jars into ``home/libs``: True if they were fetched, False if they
    were already there. BrokerBinaryNotFound without Maven, BrokerError if Maven fails,
    ChecksumMismatch if what it fetched is not what the lock file says."""
    home.mkdir(parents=True, exist_ok=True)
    libs = home / "libs"
    with _fetch_lock(home):
        if _jars_ok(libs):
            return False
        maven = maven or find_maven()
        if maven is None:
            raise BrokerBinaryNotFound(
                f"Kafka {KAFKA_VERSION}'s jars are not in {libs} and Maven (mvn) is not on PATH "
                "to fetch them; install Maven (Debian: apt-get install maven) and run "
                f"`{FETCH_HINT}`, or set {KAFKA_HOME_ENV} to a directory that has them")
        staging = Path(tempfile.mkdtemp(prefix="libs.fetching.", dir=home))
        try:
            _run_maven(maven, home, staging)
            verify_jars(staging)
            old = home / "libs.old"
            shutil.rmtree(old, ignore_errors=True)
            if libs.exists():
                libs.rename(old)
            staging.rename(libs)
            shutil.rmtree(old, ignore_errors=True)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return True


def _run_maven(maven: str, home: Path, out: Path) -> None:
    pom = home / "pom.xml"  # a copy: Maven may write beside its POM, the package may be read-only
    shutil.copyfile(POM, pom)
    argv = [maven, "-q", "-B", "-C", f"-Dmaven.repo.local={home / 'm2'}", "-f", str(pom),
            "dependency:copy-dependencies", f"-DoutputDirectory={out}"]
    log = home / "fetch.log"
    try:
        with log.open("wb") as log_file:
            result = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=log_file,
                                    stderr=subprocess.STDOUT, cwd=home,
                                    timeout=_FETCH_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BrokerError(f"Maven did not fetch Kafka's jars ({exc}); see {log}") from exc
    if result.returncode != 0:
        lines = [line.strip() for line in log.read_text(errors="replace").splitlines()
                 if line.strip()]
        errors = [line for line in lines if "ERROR" in line]
        detail = re.sub(r"\x1b\[[0-9;]*m", "", (errors or lines or ["no output"])[0])
        raise BrokerError(f"Maven failed to fetch Kafka's jars (exit {result.returncode}): "
                          f"{detail[:300]}; full output in {log}")


@dataclass(frozen=True)
class KafkaRuntime:
    """A Java runtime and the checked class path of Kafka's broker."""

    java: str
    home: Path
    classpath: str

    def argv(self, jvm_options: tuple[str, ...], main: str, *args: str) -> list[str]:
        return [self.java, *jvm_options, f"-Dlog4j2.configurationFile={LOG4J_CONFIG}",
                "-cp", self.classpath, main, *args]

    @property
    def class_archive(self) -> Path:
        """The broker's class-data-sharing archive for this Java and these jars.

        A JVM that loads Kafka's classes from an archive made by an earlier run (dumped at its
        clean exit with ``-XX:ArchiveClassesAtExit``) starts with about a third less CPU. The
        name hashes the ``java`` binary, its version and each jar's name, size and mtime: a
        new Java or a new fetch gets a new archive. The JVM checks an archive against the
        class path and runs without it when it does not fit.
        """
        java = Path(self.java).resolve()
        identity = [str(java), str(java.stat().st_mtime_ns), _java_version_text(self.java)]
        for jar in self.classpath.split(os.pathsep):
            stat = Path(jar).stat()
            identity.append(f"{jar}:{stat.st_size}:{stat.st_mtime_ns}")
        key = hashlib.sha256("\n".join(identity).encode()).hexdigest()[:16]
        return self.home / "cds" / f"kafka-broker-{key}.jsa"


def prepare(home: Path | None = None, *, fetch_missing: bool = True) -> KafkaRuntime:
    """Java found and checked, the jars fetched if missing (with Maven, when ``fetch_missing``)
    and verified: the runtime to start brokers with. Every failure is one line, and comes
    before any broker process starts."""
    home = home if home is not None else default_home()
    java = find_java()
    libs = home / "libs"
    if not libs.is_dir():
        if not fetch_missing:
            raise BrokerBinaryNotFound(f"Kafka {KAFKA_VERSION}'s jars are not in {libs}; fetch "
                                       f"them with `{FETCH_HINT}`")
        maven = find_maven()
        if maven is None:
            raise BrokerBinaryNotFound(
                f"Kafka {KAFKA_VERSION}'s jars are not in {libs} and Maven (mvn) is not on "
                f"PATH to fetch them; install Maven and run `{FETCH_HINT}`, or set "
                f"{KAFKA_HOME_ENV} to a directory that has them")
        fetch(home, maven)
    jars = verify_jars(libs)
    return KafkaRuntime(java, home, os.pathsep.join(str(jar) for jar in jars))
