"""Fixtures: synthetic image trees, ../shared when present, one Spark session per test run."""

import contextlib
import io
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import boto3
import numpy as np
import pytest
from PIL import Image

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
DAGSTER = Path(sys.executable).with_name("dagster")
# Every JVM the tests start (inherited by each subprocess: spark-submit and its drivers, the standalone cluster's
# master and workers, the EMR runner's steps) compiles with C1 only; users' runs and the bench keep the defaults.
# A test's JVM lives for seconds of tiny jobs, where C2's compilations cost more CPU than they save: a small
# whole-graph run took 67-86 s of CPU with it against 105-119 s without. Same semantics.
os.environ.setdefault("JAVA_TOOL_OPTIONS", "-XX:TieredStopAtLevel=1")
# Runs from the shell keep their Spark driver warm for the test's next run, as users' do, for less long: the
# drivers left when the tests end are stopped then (`pytest_sessionfinish`).
os.environ.setdefault("FRUITS_SPARK_KEEP_WARM_SECONDS", "60")

# The test files that take longest (a serial run's `--durations`), longest first. `make test` runs two files at a
# time (pytest-xdist, `--dist loadfile --no-loadscope-reorder`: files handed out in collection order, not by their
# number of tests): starting the long ones first keeps both workers busy to the end instead of leaving one alone
# with a ten-minute file. Order only; nothing is skipped.
LONGEST_FIRST = (
    "test_kills.py",
    "test_emr.py",
    "test_automation_local.py",
    "test_s3.py",
    "test_automation_s3.py",
    "test_faults.py",
    "test_ui_browser.py",
    "test_cluster.py",
    "test_classifier_shared.py",
    "test_churn.py",
    "test_pipeline_shared.py",
    "test_warm_driver.py",
    "test_interrupted_run.py",
    "test_freshness.py",
    "test_bad_input.py",
    "test_decisions.py",
    "test_classifier.py",
    "test_lock.py",
    "test_pipeline_small.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The longest files first (`LONGEST_FIRST`), the rest after them in their own order; a file's tests stay
    together and in order (the sort is stable)."""
    rank = {name: index for index, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


def pytest_sessionfinish(session: pytest.Session) -> None:
    """The warm Spark drivers the tests' runs started, stopped once every test is done (by the controller, with
    pytest-xdist): none outlives the test session."""
    if hasattr(session.config, "workerinput"):
        return
    from fruits_assets.spark.warm_driver import stop_drivers

    stop_drivers()


def start_server(command: list[str], log: Path, **options) -> subprocess.Popen:
    """A server the tests start, in a process group of its own so that `stop_server` ends all it spawned."""
    with log.open("w") as out:
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, **options)


def stop_server(process: subprocess.Popen, grace: float = 20.0) -> None:
    """SIGTERM to the server's whole process group, a bounded wait, then SIGKILL: it never outlives its test."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 30.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            process.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue
    raise RuntimeError(f"{process.args[:2]} outlived SIGKILL")


@contextlib.contextmanager
def moto_server(log: Path, env: dict[str, str] | None = None):
    """moto's standalone server, in a process of its own, on a free loopback port; yields its endpoint.

    Its own process, never a thread of the test's: delta-rs holds the interpreter's
    lock while it waits on S3, and a server in the same process could not answer.
    """
    port = free_port()
    server = start_server([str(DAGSTER.with_name("moto_server")), "-H", "127.0.0.1", "-p", str(port)], log, env=env)
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert server.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_server(server)


def free_port() -> int:
    """A free TCP port on loopback, where every server the tests start listens."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def materialize_command(select: str = "*") -> list[str]:
    """`dagster asset materialize` of the project's definitions, as a user types it."""
    return [str(DAGSTER), "asset", "materialize", "-m", "fruits_assets.definitions", "--select", select]


def materialize_in_shell(env: dict[str, str], select: str = "*", timeout: float = 900) -> None:
    """`dagster asset materialize` as a user runs it, in its own process; fails with its output's end, and if it
    outlives `timeout`, with where it waits: every thread of its Python process and of the JVMs it works in."""
    if "DAGSTER_HOME" in env:
        Path(env["DAGSTER_HOME"]).mkdir(parents=True, exist_ok=True)
    run = subprocess.Popen(
        # With faulthandler, SIGABRT dumps every Python thread's stack (an option, not the environment, which names
        # the warm driver a run may share with other tests' runs).
        [sys.executable, "-X", "faulthandler", *materialize_command(select)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = run.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        jvms = jvm_threads(run.pid)
        os.kill(run.pid, signal.SIGABRT)
        time.sleep(5)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(run.pid, signal.SIGKILL)  # its own JVM and workers too; a warm driver lives on
        stdout, stderr = run.communicate()
        events, _, python = stderr.partition("Fatal Python error")
        python = python.split("\nExtension modules:")[0]
        pytest.fail(f"still running after {timeout:.0f} s; its log's end:\n{events[-3000:]}\n{jvms}\n{python}")
    assert run.returncode == 0, stdout[-5000:] + stderr[-5000:]


def _children() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    return children


def _is(pid: int, program: str, word: bytes = b"") -> bool:
    """Whether process `pid` runs `program` with `word` in its command line (False once it is gone)."""
    try:
        return os.readlink(f"/proc/{pid}/exe").endswith(program) and word in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def jvm_threads(pid: int, frames: int = 10) -> str:
    """The busy or blocked threads (idle pool threads left out, `frames` frames each) of every JVM under `pid` and
    under the warm Spark drivers: where a run that does not end waits."""
    children = _children()
    drivers = [p for kids in children.values() for p in kids if _is(p, "", b"fruits_assets.spark.warm_driver")]
    under, seen = [pid, *drivers], set()
    while under:
        seen.add(under[-1])
        under.extend(c for c in children.get(under.pop(), []) if c not in seen)
    ours = ("org.apache.spark", "io.delta", "org.apache.hadoop", "software.amazon", "py4j")
    idle = ("getTask", ".take(", "SelectorImpl.select", "RedirectThread", "MonitorThread", "socketAccept")
    idle += ("waitForCommands",)  # Py4J's connections waiting for the next call
    dumps = []
    for jvm in sorted(p for p in seen if _is(p, "/java")):
        with contextlib.suppress(OSError, subprocess.SubprocessError):  # gone since, or no jcmd: the rest still shows
            jcmd = str(Path(os.readlink(f"/proc/{jvm}/exe")).with_name("jcmd"))  # the one of that very JVM
            dump = subprocess.run([jcmd, str(jvm), "Thread.print"], capture_output=True, text=True, timeout=60).stdout
            threads = [t for t in dump.split("\n\n") if any(o in t for o in ours) and not any(i in t for i in idle)]
            dumps.append(f"JVM {jvm}:\n" + "\n".join(_brief(t, ours, frames) for t in threads)[-6000:])
    return "\n".join(dumps)


def _brief(thread: str, ours: tuple[str, ...], frames: int) -> str:
    """A thread of a JVM's dump: its name and state, its top 3 frames, then only frames of `ours`."""
    head, *stack = thread.splitlines()
    kept = stack[:4] + [f for f in stack[4:] if any(o in f for o in ours)]
    return "\n".join([head[:80], *kept[:frames]])


def loopback_aws(endpoint: str, region: str) -> dict[str, str]:
    """The standard AWS environment variables for a throwaway server on loopback, with its dummy credentials."""
    return {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "local-test",
        "AWS_SECRET_ACCESS_KEY": "local-test",
        "AWS_REGION": region,
        "AWS_DEFAULT_REGION": region,
    }


def aws_client(service: str, env: dict[str, str]):
    """A boto3 client for the server and region that `env` (as `loopback_aws` gives it) names."""
    return boto3.client(
        service,
        endpoint_url=env["AWS_ENDPOINT_URL"],
        region_name=env["AWS_REGION"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
    )


def shared_path(*parts: str) -> Path:
    """A path under ../shared; skipped with a reason where it is absent, a failure in CI."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        message = f"{path} is absent: these tests need ../shared beside the repository"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def fruit_image(color: tuple[int, int, int], seed: int = 0, size: int = 100) -> Image.Image:
    """A fruit-like test image: a coloured disc with some texture on white."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    disc = (yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size * 0.4) ** 2
    pixels = np.full((size, size, 3), 255, dtype=np.uint8)
    noise = rng.integers(-30, 30, size=(size, size, 3))
    pixels[disc] = np.clip(np.array(color) + noise[disc], 0, 255).astype(np.uint8)
    return Image.fromarray(pixels)


def fruit_jpeg(color: tuple[int, int, int], seed: int = 0, size: int = 100, fmt: str = "JPEG") -> bytes:
    """`fruit_image` encoded as `fmt`."""
    buffer = io.BytesIO()
    fruit_image(color, seed, size).save(buffer, format=fmt)
    return buffer.getvalue()


def write_tree(root: Path, layout: dict[str, int], colors: dict[str, tuple[int, int, int]]) -> list[Path]:
    """Write `count` images for each `<relative folder>` in `layout`, coloured by the folder's last name."""
    written = []
    for folder, count in layout.items():
        label = Path(folder).name
        (root / folder).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            path = root / folder / f"{i}_100.jpg"
            path.write_bytes(fruit_jpeg(colors[label], seed=i))
            written.append(path)
    return written


def run_graph(
    images: Path, storage: Path, run_config: dict | None = None, raise_on_error: bool = True, select: str = "*"
):
    """The assets `select` names (every one by default) and their checks, in this process, on the local deployment."""
    from dagster import AssetSelection, Definitions, define_asset_job

    from fruits_assets.definitions import build_defs
    from fruits_assets.settings import Settings

    defs = build_defs(Settings(images=str(images), storage=str(storage)))
    if select != "*":
        selected = Definitions(jobs=[define_asset_job("selected", AssetSelection.from_string(select))])
        job = Definitions.merge(defs, selected).resolve_job_def("selected")
    else:
        job = defs.resolve_implicit_global_asset_job_def()
    return job.execute_in_process(run_config=run_config or {}, raise_on_error=raise_on_error)


@pytest.fixture(scope="session")
def spark():
    """The project's own local session (what the assets use), shared by every Spark test."""
    from fruits_assets.resources.spark_resource import SparkResource
    from fruits_assets.spark.config import app_config, file_system_config, jars_config, local_config

    config = app_config(sys.executable, sys.executable) | local_config() | file_system_config() | jars_config("delta")
    return SparkResource(spark_config=config).spark_session


def table(location: Path | str, storage_options: dict[str, str] | None = None, version: int | None = None):
    """A Delta table read by delta-rs (the `deltalake` package): an independent reader, no Spark, as pandas."""
    from deltalake import DeltaTable

    return DeltaTable(str(location), version=version, storage_options=storage_options).to_pandas()


def s3_options(env: dict[str, str]) -> dict[str, str]:
    """delta-rs's options for the loopback S3 server that `env` (as `loopback_aws` gives it) names."""
    return {
        "AWS_ENDPOINT_URL": env["AWS_ENDPOINT_URL"],
        "AWS_REGION": env["AWS_REGION"],
        "AWS_ACCESS_KEY_ID": env["AWS_ACCESS_KEY_ID"],
        "AWS_SECRET_ACCESS_KEY": env["AWS_SECRET_ACCESS_KEY"],
        "AWS_ALLOW_HTTP": "true",
        "AWS_S3_ALLOW_UNSAFE_RENAME": "true",
    }


def phone_model(storage: Path):
    """The phone's model that `storage`'s `phone_model/current.json` names, run by LiteRT as the app runs it."""
    from fruits_assets.vision.phone import LABELS_FILE, MODEL_FILE, PhoneModel
    from fruits_assets.vision.storage import current_files

    files = current_files(str(storage / "phone_model"), (MODEL_FILE, LABELS_FILE))
    assert files is not None, f"no phone model under {storage}"
    return PhoneModel.from_files(files[MODEL_FILE], files[LABELS_FILE])


def table_id(location: Path | str) -> str:
    """A Delta table's id (its log's metaData), as delta-rs reads it."""
    from deltalake import DeltaTable

    return DeltaTable(str(location)).metadata().id
