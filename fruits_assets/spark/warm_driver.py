"""A Spark driver kept warm between runs: one JVM per set of settings, lent to one run at a time.

A fresh JVM makes a run's first Spark work slow: starting it, then loading and
interpreting Spark's and Delta's code for each first query (measured here: 3 s to
start, 7 s for a first Delta read that takes 0.4 s once warm; a run adding 100 photos
to 10,000 took 63 s in a fresh JVM and 23 s in a warm one). So the first run with a
given set of settings starts a driver process (a plain PySpark driver:
`python -m fruits_assets.spark.warm_driver FOLDER`) that keeps its JVM, and later runs
attach to that JVM through its Py4J gateway (loopback, with its secret) and work in
a Spark session of their own (`newSession`: their own SQL settings and views).

One run at a time: a run holds the driver's lease (an exclusive lock on a file) from
when it attaches until its process ends; a run that finds it held starts its own JVM,
as every run did before. Whatever a run leaves behind, killed or not, is cleared before
the next uses the driver: jobs still running are cancelled (a JVM used to die with its
run) and cached data dropped, by the driver as soon as the lease is released and by
the next run as it attaches. A driver exits after `idle_seconds` without a run, or
once it has served `runs` runs (what runs leave referenced in the JVM goes with it).
A driver belongs to its Spark settings, the Python, the environment that reaches
Spark and its workers, and this package's code: any change means another driver, so
workers never run stale code.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from py4j.clientserver import ClientServer, JavaParameters, PythonParameters
from py4j.java_gateway import java_import
from pyspark import SparkContext
from pyspark.sql import SparkSession

DRIVER_MODULE = "fruits_assets.spark.warm_driver"
RUNS_PER_DRIVER = 25
POLL_SECONDS = 0.5  # how soon a driver notices its run ended (and cancels what that run left running)
START_SECONDS = 180.0  # a driver that has not started by then is taken for broken
LEASE_WAIT_SECONDS = 2.0  # the driver's own check holds the lease for a moment: a run retries that long
CONNECTION, LEASE, CONFIG, LOG = "connection.json", "lease", "config.json", "driver.log"
# What of the environment reaches the JVM or the Python workers, so names a driver (no FRUITS_ setting does).
ENVIRONMENT_PREFIXES = ("AWS_", "SPARK_", "PYSPARK_", "JAVA_", "HADOOP_", "PYTHON", "TF_", "OMP_", "LD_")
ENVIRONMENT_NAMES = ("PATH", "HOME")
# What PySpark's own gateway imports into the JVM view (pyspark.java_gateway.launch_gateway).
JAVA_IMPORTS = (
    "org.apache.spark.SparkConf",
    "org.apache.spark.api.java.*",
    "org.apache.spark.api.python.*",
    "org.apache.spark.ml.python.*",
    "org.apache.spark.mllib.api.python.*",
    "org.apache.spark.resource.*",
    "org.apache.spark.sql.Encoders",
    "org.apache.spark.sql.OnSuccessCall",
    "org.apache.spark.sql.functions",
    "org.apache.spark.sql.classic.*",
    "org.apache.spark.sql.api.python.*",
    "org.apache.spark.sql.hive.*",
    "scala.Tuple2",
)

PACKAGE = Path(__file__).resolve().parents[1]
_LEASE: list = []  # this process's lease, held until it exits


class DriverFailedToStart(RuntimeError):
    """The warm driver's process ended or hung before its JVM was ready; the message holds its log's end."""


def drivers_root() -> Path:
    """Where drivers keep their files: private to this user, under the temporary folder."""
    return Path(tempfile.gettempdir()) / f"fruits_assets-{os.getuid()}" / "spark-drivers"


def code_fingerprint(package: Path = PACKAGE) -> list:
    """Each module of this package by name, size and modification time: edited code means another driver."""
    return sorted(
        (str(p.relative_to(package)), s.st_size, s.st_mtime_ns) for p in package.rglob("*.py") if (s := p.stat())
    )


def driver_key(config: Mapping[str, str], environ: Mapping[str, str] = os.environ) -> str:
    """The name of the driver for these settings: a digest of all that a driver's behaviour depends on."""
    reaching = {k: v for k, v in environ.items() if k.startswith(ENVIRONMENT_PREFIXES) or k in ENVIRONMENT_NAMES}
    named = {"config": dict(config), "python": sys.executable, "environment": reaching, "code": code_fingerprint()}
    return hashlib.sha256(json.dumps(named, sort_keys=True).encode()).hexdigest()[:24]


def _locked(lease, wait: float) -> bool:
    """Take the lease (an exclusive lock) within `wait` seconds; False if another process holds it."""
    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(lease, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)


def _is_driver(pid: int, folder: Path) -> bool:
    """Whether `pid` is still the driver of `folder` (and not another process that got its number)."""
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return False
    return str(folder).encode() in command and any(DRIVER_MODULE.encode() == part for part in command)


def _kill(pid: int, folder: Path) -> bool:
    """SIGKILL to `folder`'s driver and its process group (its JVM and workers); whether there was one."""
    if not _is_driver(pid, folder):
        return False
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    return True


@dataclass(frozen=True)
class Attached:
    """A session on a warm driver: the driver's process, its log, and whether this run started it."""

    session: SparkSession
    pid: int
    log: Path
    started: bool


def attached_session(
    config: Mapping[str, str], idle_seconds: float, root: Path | None = None, runs: int = RUNS_PER_DRIVER
) -> Attached | None:
    """A session on the warm driver for `config`, the driver started if there is none; None when another run
    holds it (the caller then starts a JVM of its own)."""
    folder = (root or drivers_root()) / driver_key(config)
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    lease = open(folder / LEASE, "a+")  # noqa: SIM115 - held open, so locked, until this process exits
    if not _locked(lease, LEASE_WAIT_SECONDS):
        lease.close()
        return None
    connection = _connection(folder)
    started = connection is None
    if connection is None:
        connection = _start(folder, config, idle_seconds, runs)
    _LEASE.append(lease)
    session = _attach(connection)
    clear(session)  # what a run killed a moment ago left, before the driver itself noticed
    return Attached(session, connection["pid"], folder / LOG, started)


def _connection(folder: Path) -> dict | None:
    """The running driver's gateway, if one is there and answers; a dead or broken one is cleared away."""
    path = folder / CONNECTION
    if not path.exists():
        return None
    connection = json.loads(path.read_text())
    if _is_driver(connection["pid"], folder):
        try:
            gateway = _gateway(connection)
            gateway.jvm.System.currentTimeMillis()
            gateway.close()  # its connections only: `shutdown` would stop the driver's gateway
            return connection
        except Exception:  # noqa: BLE001 - a driver whose JVM does not answer is replaced
            _kill(connection["pid"], folder)
    path.unlink(missing_ok=True)
    return None


def _start(folder: Path, config: Mapping[str, str], idle_seconds: float, runs: int) -> dict:
    """Start a driver for `config` in a process of its own (it outlives this one) and wait for its gateway."""
    (folder / CONFIG).write_text(json.dumps({"config": dict(config), "idle_seconds": idle_seconds, "runs": runs}))
    os.chmod(folder / CONFIG, 0o600)
    with open(folder / LOG, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", DRIVER_MODULE, str(folder)],
            cwd=folder,  # what Spark writes where it runs stays with the driver
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # not killed with the run that started it
            close_fds=True,
        )
    deadline = time.monotonic() + START_SECONDS
    while not (folder / CONNECTION).exists():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            tail = (folder / LOG).read_text(errors="replace")[-3000:]
            raise DriverFailedToStart(f"the warm Spark driver did not start (log {folder / LOG}):\n{tail}")
        time.sleep(0.1)
    return json.loads((folder / CONNECTION).read_text())


def _gateway(connection: dict) -> ClientServer:
    gateway = ClientServer(
        java_parameters=JavaParameters(port=connection["port"], auth_token=connection["secret"], auto_convert=True),
        python_parameters=PythonParameters(port=0, eager_load=False),
    )
    gateway.proc = None
    for name in JAVA_IMPORTS:
        java_import(gateway.jvm, name)
    return gateway


def _attach(connection: dict) -> SparkSession:
    """This process's SparkContext on the driver's JVM, and a session of its own."""
    gateway = _gateway(connection)
    jvm = gateway.jvm
    running = jvm.JavaSparkContext.fromSparkContext(jvm.org.apache.spark.SparkContext.getOrCreate())
    context = SparkContext(gateway=gateway, jsc=running)
    own = jvm.org.apache.spark.sql.SparkSession.getDefaultSession().get().newSession()
    return SparkSession(context, jsparkSession=own)


def serve(folder: Path) -> None:
    """The driver: its session, then lend it, one run at a time, until idle or worn out."""
    settings = json.loads((folder / CONFIG).read_text())
    config, idle_seconds, runs = settings["config"], float(settings["idle_seconds"]), int(settings["runs"])
    if config.get("spark.pyspark.python"):
        os.environ["PYSPARK_PYTHON"] = config["spark.pyspark.python"]
    spark = SparkSession.builder.config(map=config).getOrCreate()
    context = spark.sparkContext
    parameters = context._gateway.java_parameters
    ready = folder / f".{CONNECTION}.{os.getpid()}"
    connection = {"port": parameters.port, "secret": parameters.auth_token, "pid": os.getpid(), "ui": context.uiWebUrl}
    ready.write_text(json.dumps(connection))
    os.chmod(ready, 0o600)
    os.replace(ready, folder / CONNECTION)
    print(f"warm Spark driver ready: pid {os.getpid()}, app {context.applicationId}, UI {context.uiWebUrl}", flush=True)
    with open(folder / LEASE, "a+") as lease:
        _lend(spark, folder, lease, idle_seconds, runs)
    spark.stop()


def _lend(spark: SparkSession, folder: Path, lease, idle_seconds: float, runs: int) -> None:
    """Wait while runs hold the lease; after each, clear what it left. Returns holding the lease, the
    connection file gone: no run attaches to a driver on its way out."""
    served, busy, idle_since = 0, True, time.monotonic()  # the run that started this driver holds the lease
    while True:
        time.sleep(POLL_SECONDS)
        if not _locked(lease, 0):
            busy = True
            continue
        if busy:
            served, busy, idle_since = served + 1, False, time.monotonic()
            clear(spark)
            print(f"run {served} done", flush=True)
        if served >= runs or time.monotonic() - idle_since >= idle_seconds:
            (folder / CONNECTION).unlink(missing_ok=True)
            print(f"exits after {served} run(s)", flush=True)
            return
        fcntl.flock(lease, fcntl.LOCK_UN)


def clear(spark: SparkSession) -> None:
    """What a run that ended left: jobs still running (its process was killed), cached tables and RDDs."""
    context = spark.sparkContext
    context.cancelAllJobs()
    spark.catalog.clearCache()
    for rdd in context._jsc.getPersistentRDDs().values():
        rdd.unpersist(False)


def stop_drivers(root: Path | None = None) -> list[int]:
    """Stop every driver under `root` now (SIGTERM to its process group: its JVM and workers too); their pids."""
    stopped = []
    for path in (root or drivers_root()).glob(f"*/{CONNECTION}"):
        pid = json.loads(path.read_text())["pid"]
        path.unlink(missing_ok=True)
        if _is_driver(pid, path.parent):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGTERM)
                stopped.append(pid)
    return stopped


if __name__ == "__main__":
    serve(Path(sys.argv[1]))
