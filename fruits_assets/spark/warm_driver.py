"""A Spark driver kept warm between runs: one JVM per set of settings, lent to one run at a time.

A fresh JVM makes a run's first Spark work slow: starting it, then loading and
interpreting Spark's and Delta's code for each first query (measured here: 3 s to
start, 7 s for a first Delta read that takes 0.4 s once warm; a run adding 100 photos
to 10,000 took 63 s in a fresh JVM and 28 s in a warm one). So the first run with a
given set of settings starts a driver process (a plain PySpark driver:
`python -m fruits_assets.spark.warm_driver FOLDER`) that keeps its JVM, and later runs
attach to that JVM through its Py4J gateway (loopback, with its secret) and work in
a Spark session of their own (`newSession`: their own SQL settings and views).

One run at a time: a run holds the driver's lease (an exclusive lock on a file) from
when it attaches until its process ends; a run that cannot have it starts its own JVM,
as every run did before. Whatever a run leaves behind, killed or not, is cleared before
the next uses the driver: jobs still running are cancelled (a JVM used to die with its
run) and cached data dropped, by the driver as soon as the lease is released and by
the next run as it attaches. A driver exits after `idle_seconds` without a run, once
it has served `runs` runs, or once what runs leave referenced in its JVM (Py4J frees
nothing a process that ended still held) fills `HEAP_SHARE` of its heap.
A driver belongs to its Spark settings, the Python and its packages, the environment
that reaches Spark and its workers, and this package's code: any change means another
driver, so workers never run stale code, and the idle driver of the old settings goes.
Its files live in a folder of the user's own that no one else may write: another user
could otherwise plant a gateway of their own there.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pyspark
from py4j.clientserver import ClientServer, JavaParameters, PythonParameters
from py4j.java_gateway import java_import
from pyspark import SparkContext
from pyspark.sql import SparkSession, SQLContext

DRIVER_MODULE = "fruits_assets.spark.warm_driver"
RUNS_PER_DRIVER = 25
POLL_SECONDS = 0.5  # how soon a driver notices its run ended (and cancels what that run left running)
START_SECONDS = 180.0  # a driver that has not started by then is taken for broken
LEASE_WAIT_SECONDS = 2.0  # the driver's own check holds the lease for a moment: a run retries that long
STOP_WAIT_SECONDS = 15.0  # after each run a driver holds its lease while it clears and collects (seconds, loaded)
CONNECTION, LEASE, CONFIG, LOG, RUNS = "connection.json", "lease", "config.json", "driver.log", "runs"
# Asked of a driver stop_drivers could not stop at once (lent, or still clearing), by its pid: it goes once it
# holds its lease (a later driver in the same folder has another pid, and is not asked).
STOP = "stop"
PREVIOUS_LOG = f"{LOG}.1"  # the log of the driver before, of these settings: its last lines say why it went
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
SITE_PACKAGES = Path(pyspark.__file__).resolve().parents[1]  # its time changes with any package (un)installed
# A driver whose heap, collected, still holds more than this share after a run retires: a run needs the rest (the
# whole graph's +1% at 40,000 images ran out of a 1 GB heap that its 17 earlier runs had left half full).
HEAP_SHARE = 0.3
PROBE_SECONDS = 10  # a driver whose JVM does not answer within this is taken for hung and replaced
STOPPED_KEPT_SECONDS = 86_400.0  # a stopped driver's folder (its log) is kept a day for whoever looks into it
_LEASE: list = []  # this process's lease, held until it exits


class WarmDriverUnavailable(RuntimeError):
    """No warm driver for this run (lent to another run, failed to start, unsafe folder): the message says why,
    and the caller starts a JVM of its own."""


class AttachedContext(SparkContext):
    """A SparkContext on a driver's JVM that is lent, not owned: `stop` lets go of it, never stops the driver's."""

    def stop(self) -> None:
        with SparkContext._lock:
            if getattr(self, "_accumulatorServer", None):
                self._accumulatorServer.shutdown()
                self._accumulatorServer = None
            SparkContext._active_spark_context = None


def drivers_root() -> Path:
    """Where drivers keep their files: a folder of this user's own under the temporary folder."""
    return Path(tempfile.gettempdir()) / f"fruits_assets-{os.getuid()}" / "spark-drivers"


def _private(folder: Path, below: Path) -> Path:
    """`folder` and each folder between `below` and it, created private (0700) if missing, and checked to be this
    user's own real folders that no one else may write (a link or a folder others may write fails): another user
    could otherwise plant a driver's gateway there. The secret itself is in a file only the user may read."""
    for level in [*reversed(folder.relative_to(below).parents), folder.relative_to(below)][1:]:
        path = below / level
        with contextlib.suppress(FileExistsError):
            os.mkdir(path, 0o700)
        info = os.lstat(path)
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o022:
            raise WarmDriverUnavailable(f"{path} is not a folder of this user's own that only they may write")
    return folder


def code_fingerprint(package: Path = PACKAGE) -> list:
    """Each module of this package by name, size and modification time: edited code means another driver."""
    return sorted(
        (str(p.relative_to(package)), s.st_size, s.st_mtime_ns) for p in package.rglob("*.py") if (s := p.stat())
    )


def driver_key(config: Mapping[str, str], environ: Mapping[str, str] = os.environ) -> str:
    """The name of the driver for these settings: a digest of all that a driver's behaviour depends on."""
    reaching = {k: v for k, v in environ.items() if k.startswith(ENVIRONMENT_PREFIXES) or k in ENVIRONMENT_NAMES}
    named = {
        "config": dict(config),
        "python": [sys.executable, sys.version],
        "packages": SITE_PACKAGES.stat().st_mtime_ns,
        "environment": reaching,
        "code": code_fingerprint(),
    }
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
    """Whether `pid` is still this user's driver of `folder` (and not another process that got its number)."""
    try:
        if os.stat(f"/proc/{pid}").st_uid != os.getuid():
            return False
        command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return False
    return str(folder).encode() in command and DRIVER_MODULE.encode() in command


def _kill(pid: int, folder: Path, sig: int = signal.SIGKILL) -> bool:
    """`sig` to `folder`'s driver and its process group (its JVM and workers); whether there was one."""
    if not _is_driver(pid, folder):
        return False
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, sig)
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
) -> Attached:
    """A session on the warm driver for `config`, the driver started if there is none.

    Raises `WarmDriverUnavailable` when there is none to have (another run holds it,
    it failed to start or to answer): the caller then starts a JVM of its own, and
    this process is left as it was, with no Spark.
    """
    below = Path(tempfile.gettempdir()) if root is None else root.parent
    root = root or drivers_root()
    folder = _private(root / driver_key(config), below)
    lease = open(folder / LEASE, "a+")  # noqa: SIM115 - held open, so locked, until this process exits
    if not _locked(lease, LEASE_WAIT_SECONDS):
        lease.close()
        raise WarmDriverUnavailable("the warm driver is lent to another run")
    try:
        connection = _connection(folder)
        started = connection is None
        if connection is None:
            stop_drivers(root)  # the idle ones of other settings (old code, say): one idle JVM at most
            sweep_stopped(root)  # and the folders stopped ones left: one per set of settings ever used
            connection = _start(folder, config, idle_seconds, runs)
        session = _attach(connection)
        clear(session)  # what a run killed a moment ago left, before the driver itself noticed
        (folder / RUNS).write_text(str(_served(folder) + 1))  # under the lease: no other run counts at once
    except Exception as error:
        _forget_spark()
        lease.close()
        if isinstance(error, WarmDriverUnavailable):
            raise
        raise WarmDriverUnavailable(f"the warm driver failed ({type(error).__name__}: {error})") from error
    _LEASE.append(lease)
    return Attached(session, connection["pid"], folder / LOG, started)


def answers(context: SparkContext) -> bool:
    """Whether the JVM behind `context` (a warm driver's or this process's own) still answers: one that died
    (killed for its memory, crashed) fails every later call, a step's retry included, until another is started."""
    try:
        return not context._jsc.sc().isStopped()
    except Exception:  # noqa: BLE001 - Py4J's errors for a closed or refused connection, whichever comes
        return False


def let_go() -> None:
    """This process's hold on a JVM that no longer answers: the driver's lease released (the next attach finds the
    driver dead and starts another) and PySpark's state cleared, so that the next session starts afresh."""
    context = SparkContext._active_spark_context
    server = getattr(context, "_accumulatorServer", None)
    if server is not None:
        server.shutdown()
    gateway = SparkContext._gateway
    if gateway is not None:
        with contextlib.suppress(Exception):
            gateway.close()  # this side's sockets: the JVM at the other end is gone
        if getattr(gateway, "proc", None) is not None:  # a JVM of this process's own: gone for good, and reaped
            gateway.proc.kill()
            gateway.proc.wait(timeout=60)
    while _LEASE:
        _LEASE.pop().close()
    _forget_spark()


def _forget_spark() -> None:
    """This process's PySpark state as before a failed attach, so that a JVM of its own can start."""
    SparkContext._active_spark_context = None
    SparkContext._gateway = None
    SparkContext._jvm = None
    SparkSession._instantiatedSession = None
    SparkSession._activeSession = None
    SQLContext._instantiatedContext = None


def _connection(folder: Path) -> dict | None:
    """The running driver's gateway, if one is there and its SparkContext answers; a dead, stopped or hung one
    is killed and cleared away."""
    path = folder / CONNECTION
    if not path.exists():
        return None
    connection = json.loads(path.read_text())
    if _is_driver(connection["pid"], folder):
        try:
            gateway = _gateway(connection, read_timeout=PROBE_SECONDS)
            default = gateway.jvm.org.apache.spark.sql.SparkSession.getDefaultSession()
            alive = default.isDefined() and not default.get().sparkContext().isStopped()
            gateway.close()  # its connections only: `shutdown` would stop the driver's gateway
            if alive:
                return connection
        except Exception:  # noqa: BLE001, S110 - whatever the failure, such a driver is replaced
            pass
        _kill(connection["pid"], folder)
    path.unlink(missing_ok=True)
    return None


def _start(folder: Path, config: Mapping[str, str], idle_seconds: float, runs: int) -> dict:
    """Start a driver for `config` in a process of its own (it outlives this one) and wait for its gateway."""
    (folder / CONFIG).write_text(json.dumps({"config": dict(config), "idle_seconds": idle_seconds, "runs": runs}))
    os.chmod(folder / CONFIG, 0o600)
    (folder / RUNS).write_text("0")
    (folder / STOP).unlink(missing_ok=True)  # asked of an earlier driver of these settings, now gone
    with contextlib.suppress(FileNotFoundError):  # the first driver of these settings has none before it
        os.replace(folder / LOG, folder / PREVIOUS_LOG)
    environment = dict(os.environ)
    if config.get("spark.master", "").startswith("local"):
        environment.setdefault("SPARK_LOCAL_IP", "127.0.0.1")  # its Spark UI on loopback, as long as it lives
    with open(folder / LOG, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", DRIVER_MODULE, str(folder)],
            cwd=folder,  # what Spark writes where it runs stays with the driver
            env=environment,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # not killed with the run that started it
            close_fds=True,
        )
    deadline = time.monotonic() + START_SECONDS
    while not (folder / CONNECTION).exists():
        if process.poll() is not None or time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            tail = (folder / LOG).read_text(errors="replace")[-3000:]
            raise WarmDriverUnavailable(f"the warm driver did not start (its log, {folder / LOG}):\n{tail}")
        time.sleep(0.1)
    return json.loads((folder / CONNECTION).read_text())


def _gateway(connection: dict, read_timeout: float | None = None) -> ClientServer:
    """A Py4J connection to a driver's JVM, with the names PySpark's own gateway imports."""
    gateway = ClientServer(
        java_parameters=JavaParameters(
            port=connection["port"], auth_token=connection["secret"], auto_convert=True, read_timeout=read_timeout
        ),
        python_parameters=PythonParameters(port=0, eager_load=False),
    )
    gateway.proc = None
    for name in JAVA_IMPORTS:
        java_import(gateway.jvm, name)
    return gateway


def _attach(connection: dict) -> SparkSession:
    """This process's SparkContext on the driver's JVM (lent: `AttachedContext`), and a session of its own."""
    gateway = _gateway(connection)
    jvm = gateway.jvm
    driver = jvm.org.apache.spark.sql.SparkSession.getDefaultSession().get()
    context = AttachedContext(gateway=gateway, jsc=jvm.JavaSparkContext.fromSparkContext(driver.sparkContext()))
    return SparkSession(context, jsparkSession=driver.newSession())


def serve(folder: Path) -> None:
    """The driver: its session, then lend it, one run at a time, until idle or worn out."""
    # Stopped by SIGTERM whatever the run that started it ignored: Dagster maps SIGTERM to SIGINT's handler, which
    # is "ignore" in a shell's background job, and an ignored signal stays ignored across exec (the JVM too).
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
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


def _served(folder: Path) -> int:
    """How many runs the folder's driver has lent its JVM to (each run counts itself, under the lease)."""
    with contextlib.suppress(FileNotFoundError, ValueError):
        return int((folder / RUNS).read_text())
    return 0


def _lend(spark: SparkSession, folder: Path, lease, idle_seconds: float, runs: int) -> None:
    """Wait while runs hold the lease; after each, clear what it left. Returns holding the lease, the
    connection file gone: no run attaches to a driver on its way out."""
    seen, idle_since = 0, time.monotonic()
    while True:
        time.sleep(POLL_SECONDS)
        if not _locked(lease, 0):
            continue
        served = _served(folder)
        if served != seen:  # a run came and went since the last look
            seen, idle_since = served, time.monotonic()
            clear(spark)
            heap = _heap_share(spark)
            print(f"{served} run(s) served; heap {heap:.0%} full after a collection", flush=True)
            if served >= runs or heap > HEAP_SHARE:
                idle_since = -float("inf")  # worn out: it goes now
        if _asked_to_stop(folder):
            idle_since = -float("inf")  # stop_drivers asked while it was lent or clearing
        if time.monotonic() - idle_since >= idle_seconds:
            (folder / CONNECTION).unlink(missing_ok=True)
            print(f"exits after {served} run(s)", flush=True)
            return
        fcntl.flock(lease, fcntl.LOCK_UN)


def _asked_to_stop(folder: Path) -> bool:
    with contextlib.suppress(FileNotFoundError, ValueError):
        return int((folder / STOP).read_text()) == os.getpid()
    return False


def _heap_share(spark: SparkSession) -> float:
    """How full the JVM's heap is after a full collection: what runs left referenced (through Py4J, which frees
    nothing a process that ended still held) stays."""
    jvm = spark.sparkContext._jvm
    jvm.java.lang.System.gc()
    runtime = jvm.java.lang.Runtime.getRuntime()
    return (runtime.totalMemory() - runtime.freeMemory()) / runtime.maxMemory()


def clear(spark: SparkSession) -> None:
    """What a run that ended left: jobs still running (its process was killed), cached tables and RDDs, and
    Delta's cached table logs (tables may have been re-created at the same paths since)."""
    context = spark.sparkContext
    context.cancelAllJobs()
    spark.catalog.clearCache()
    for rdd in context._jsc.getPersistentRDDs().values():
        rdd.unpersist(False)
    context._jvm.org.apache.spark.sql.delta.DeltaLog.clearCache()


def stop_drivers(root: Path | None = None) -> list[int]:
    """Stop every driver under `root`: now (SIGTERM to its process group: its JVM and workers too) if no run
    holds it, else as soon as it holds its lease again; the pids stopped now. One clearing what its last run
    left (a full collection, seconds on a loaded machine) is waited for a while, then asked too."""
    stopped = []
    for path in (root or drivers_root()).glob(f"*/{CONNECTION}"):
        with contextlib.suppress(FileNotFoundError, json.JSONDecodeError):
            seen = json.loads(path.read_text())["pid"]
            with open(path.parent / LEASE, "a+") as lease:
                if not _locked(lease, STOP_WAIT_SECONDS):
                    (path.parent / STOP).write_text(str(seen))  # a run or its own clearing holds it: it goes after
                    continue
                pid = json.loads(path.read_text())["pid"]  # the one there now (none, if it went while this waited)
                path.unlink()
                if _kill(pid, path.parent, signal.SIGTERM):
                    stopped.append(pid)
    return stopped


def _last_touched(folder: Path) -> float:
    return max((p.lstat().st_mtime for p in folder.rglob("*")), default=folder.lstat().st_mtime)


def sweep_stopped(root: Path | None = None, kept_seconds: float = STOPPED_KEPT_SECONDS) -> list[Path]:
    """Remove the folders of stopped drivers (no gateway, no run holding the lease) untouched for `kept_seconds`:
    each holds a log and a few small files, and every change of settings or code leaves one. The folders removed."""
    root, removed = root or drivers_root(), []
    for folder in sorted(root.iterdir()) if root.is_dir() else []:
        if folder.is_symlink() or not folder.is_dir() or (folder / CONNECTION).exists():
            continue
        if time.time() - _last_touched(folder) < kept_seconds:
            continue
        with open(folder / LEASE, "a+") as lease:
            if not _locked(lease, 0) or (folder / CONNECTION).exists():
                continue  # a run is starting a driver there
            shutil.rmtree(folder)
        removed.append(folder)
    return removed


if __name__ == "__main__":
    serve(Path(sys.argv[1]))
