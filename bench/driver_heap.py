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
import json
import re
import shutil
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import bench
from fruits_assets.spark.warm_driver import stop_drivers

HEAP = re.compile(r"total (\d+)K, used (\d+)K")
UI = "http://localhost:4040/api/v1/applications"


def _driver_jvm() -> int | None:
    """The warm driver's JVM: the Java child of the `fruits_assets.spark.warm_driver` process."""
    for driver in subprocess.run(
        ["pgrep", "-f", "fruits_assets.spark.warm_driver"], capture_output=True, text=True
    ).stdout.split():
        for child in subprocess.run(["pgrep", "-P", driver], capture_output=True, text=True).stdout.split():
            if b"java" in bench._command(int(child)):
                return int(child)
    return None


def _running_jobs() -> str:
    try:
        app = json.load(urllib.request.urlopen(UI, timeout=1))[0]["id"]
        jobs = json.load(urllib.request.urlopen(f"{UI}/{app}/jobs?status=running", timeout=1))
    except (OSError, ValueError, IndexError, KeyError):
        return ""
    return "; ".join(job.get("description", job["name"])[-60:] for job in jobs)


def _sample(timeline: list[tuple], stop: threading.Event) -> None:
    while not stop.is_set():
        pid = _driver_jvm()
        if pid:
            info = subprocess.run(["jcmd", str(pid), "GC.heap_info"], capture_output=True, text=True).stdout
            heap = HEAP.search(info)
            if heap:
                rss = bench._memory(pid)[0]
                committed, used = int(heap.group(1)) // 1024, int(heap.group(2)) // 1024
                timeline.append((time.time(), committed, used, rss // 2**20, _running_jobs()))
        stop.wait(2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=200000, help="the generated corpus (build/bench/corpus-SIZE)")
    parser.add_argument("--label", default="base", help="names this measurement in the output")
    args = parser.parse_args()
    work = Path("/tmp") / f"driver_heap-{args.label}"
    shutil.rmtree(work, ignore_errors=True)
    stop_drivers()
    timeline: list[tuple] = []
    stop = threading.Event()
    threading.Thread(target=_sample, args=(timeline, stop), daemon=True).start()
    runs = [("Test 1", bench.SHARED / "fruits-360" / "Test"), ("Test 2", bench.SHARED / "fruits-360" / "Test")]
    runs.append((str(args.size), bench.CORPORA / f"corpus-{args.size}"))
    try:
        for name, images in runs:
            began = len(timeline)
            run = bench.materialize(images, work / name.replace(" ", ""), work / f"home-{name.replace(' ', '')}")
            by_process = {k: round(v, 3) for k, v in run["peak_pss_gb_by_process"].items()}
            print(
                args.label,
                name,
                f"{run['seconds']:.1f} s",
                run["spark"],
                f"peak PSS {run['peak_pss_gb']:.3f} GB",
                by_process,
                flush=True,
            )
            print("  s, heap committed MB, heap used MB, JVM RSS MB, Spark jobs running", flush=True)
            start = timeline[began][0] if len(timeline) > began else 0
            for at, committed, used, rss, jobs in timeline[began:]:
                print(f"  {at - start:5.0f} {committed:5d} {used:5d} {rss:5d} {jobs}", flush=True)
    finally:
        stop.set()
        stop_drivers()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
