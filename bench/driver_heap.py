"""The warm driver JVM's heap over a run: the feature pipeline on `Test` twice (the first starts the warm driver),
then on a generated corpus on that driver; every 2 s, the JVM's heap (committed and used, `jcmd GC.heap_info`), its
RSS, and the Spark jobs running (the driver's REST API), printed as a timeline after each run's peaks by process.

It answers what `bench/jvm_memory.py` cannot: when in a run the heap grows, and in which job. JVM options
to compare go in the project's code (`spark/config.py driver_java_options` or `local_config`): G1 sizes its
young generation from the command line's options only, and ignores `-XX:MaxNewSize` given in
`JAVA_TOOL_OPTIONS` (measured: `java -Xmx1g` with it there keeps the ergonomic 614 MB).

    python bench/driver_heap.py [--size 200000] [--label base]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import jvm_memory

import bench
from fruits_assets.spark.warm_driver import CONNECTION, drivers_root, stop_drivers

HEAP = re.compile(r"total (\d+)K, used (\d+)K")


def _driver() -> dict | None:
    """This user's running warm driver (`connection.json`: its pid and its Spark UI), if there is one."""
    for path in drivers_root().glob(f"*/{CONNECTION}"):
        with contextlib.suppress(OSError, ValueError):
            return json.loads(path.read_text())
    return None


def _jvm_of(driver: int) -> int | None:
    """The driver process's JVM: its child running Java."""
    children = Path(f"/proc/{driver}/task/{driver}/children").read_text().split()
    return next((int(child) for child in children if b"java" in bench._command(int(child))), None)


def _running_jobs(ui: str) -> str:
    """The descriptions of the Spark jobs running now: which step the heap belongs to."""
    try:
        app = json.load(urllib.request.urlopen(f"{ui}/api/v1/applications", timeout=1))[0]["id"]
        jobs = json.load(urllib.request.urlopen(f"{ui}/api/v1/applications/{app}/jobs?status=running", timeout=1))
    except (OSError, ValueError, IndexError, KeyError):
        return ""
    return "; ".join(job.get("description", job["name"])[-60:] for job in jobs)


def _sample(jcmd: str, timeline: list[tuple], stop: threading.Event) -> None:
    """Every 2 s: the time, the heap committed and used (MiB), the JVM's RSS (MiB) and the jobs running."""
    while not stop.is_set():
        try:
            driver = _driver()
            pid = _jvm_of(driver["pid"]) if driver else None
            if pid:
                info = subprocess.run([jcmd, str(pid), "GC.heap_info"], capture_output=True, text=True, timeout=30)
                heap = HEAP.search(info.stdout)
                if heap:
                    rss = bench._memory(pid)[0] // 2**20
                    used = (int(heap.group(1)) // 1024, int(heap.group(2)) // 1024)
                    timeline.append((time.time(), *used, rss, _running_jobs(driver["ui"])))
        except (OSError, KeyError, subprocess.TimeoutExpired):  # the driver went between two reads
            pass
        stop.wait(2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=200000, help="the generated corpus (build/bench/corpus-SIZE)")
    parser.add_argument("--label", default="base", help="names this measurement in the output")
    args = parser.parse_args()
    corpus = bench.CORPORA / f"corpus-{args.size}"
    if not corpus.is_dir():
        raise SystemExit(f"{corpus} is missing: `python bench/bench.py --sizes {args.size}` generates it")
    work = Path(tempfile.mkdtemp(prefix=f"driver_heap-{args.label}-"))
    stop_drivers()  # the first run starts the driver measured: any other warm driver goes (a bench's too)
    timeline: list[tuple] = []
    stop = threading.Event()
    threading.Thread(target=_sample, args=(jvm_memory._jcmd(), timeline, stop), daemon=True).start()
    runs = [("Test-1", bench.SHARED / "fruits-360" / "Test"), ("Test-2", bench.SHARED / "fruits-360" / "Test")]
    try:
        for name, images in [*runs, (str(args.size), corpus)]:
            began = time.time()
            run = bench.materialize(images, work / name, work / f"home-{name}")
            by_process = {k: round(v, 3) for k, v in run["peak_pss_gb_by_process"].items()}
            print(
                f"{args.label} {name}: {run['seconds']:.1f} s, {run['spark']}, peak PSS {run['peak_pss_gb']:.3f} GB",
                by_process,
                flush=True,
            )
            print("  s from the run's start, heap committed MiB, heap used MiB, JVM RSS MiB, Spark jobs running")
            for at, committed, used, rss, jobs in [sample for sample in timeline if sample[0] >= began]:
                print(f"  {at - began:5.0f} {committed:5d} {used:5d} {rss:5d} {jobs}", flush=True)
            timeline.clear()  # what the driver does between runs (its clearing, a collection) is no run's
    finally:
        stop.set()
        stop_drivers()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
