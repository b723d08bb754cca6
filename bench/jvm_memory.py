"""Where the Spark driver JVM's memory goes: the feature pipeline on `Test` twice (the first run starts the warm
driver), then on 40,000 generated images on that driver, with the JVM's Native Memory Tracking on.

Every 4 s it reads each driver JVM's RSS and PSS and NMT's committed sizes by category
(`jcmd <pid> VM.native_memory summary`); at each run's JVM peak it prints them. RSS above
NMT's total is memory the JVM does not account for: native libraries' allocations, and
what glibc keeps after they free it. Only JVMs started with NMT on (by this script)
are read; warm drivers are stopped before and after, so the first run starts one.
`--java-options` come before the project's own (`spark.driver.defaultJavaOptions`,
with the native trim since 4fe391b), which therefore win: the rows without the trim
in docs/performance.md were measured before it.

    python bench/jvm_memory.py [--own-jvm] [--java-options "-XX:…"] [--sizes 40000]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import bench
from fruits_assets.spark.warm_driver import stop_drivers

NMT = b"-XX:NativeMemoryTracking=summary"

CATEGORY = re.compile(r"-\s+([A-Za-z ]+?) \(reserved=\d+MB, committed=(\d+)MB\)")
TOTAL = re.compile(r"Total: reserved=\d+MB, committed=(\d+)MB")


def _driver_jvms() -> list[int]:
    """The Spark driver JVMs this script started: NMT on in their environment."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and b"SparkSubmit" in bench._command(int(entry)):
            try:
                environment = Path(f"/proc/{entry}/environ").read_bytes()
            except OSError:  # gone, or another user's
                continue
            if NMT in environment:
                found.append(int(entry))
    return found


def _jcmd() -> str:
    """The JVM's own `jcmd`, found as Spark finds its `java`: `JAVA_HOME`, else the path."""
    home = os.environ.get("JAVA_HOME")
    java = Path(home) / "bin" / "java" if home else shutil.which("java")
    if java is None:
        raise SystemExit("no java: set JAVA_HOME or put java on the PATH")
    return str(Path(os.path.realpath(java)).with_name("jcmd"))


def _sample(jcmd: str, pid: int) -> dict | None:
    try:
        rss, pss = bench._memory(pid)
        out = subprocess.run(
            [jcmd, str(pid), "VM.native_memory", "summary", "scale=MB"], capture_output=True, text=True, timeout=30
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    total = TOTAL.search(out)
    if total is None:
        return None
    return {"rss_mb": rss / 1e6, "pss_mb": pss / 1e6, "nmt_mb": int(total.group(1))} | {
        name.strip(): int(mb) for name, mb in CATEGORY.findall(out)
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--own-jvm", action="store_true", help="each run with a JVM of its own (no warm driver)")
    parser.add_argument("--java-options", default="", help="more JVM options for every JVM (JAVA_TOOL_OPTIONS)")
    parser.add_argument("--sizes", type=int, nargs="*", default=[40000])
    args = parser.parse_args()
    jcmd = _jcmd()
    settings = {"JAVA_TOOL_OPTIONS": f"{NMT.decode()} {args.java_options}".strip()}
    if args.own_jvm:
        settings["FRUITS_SPARK_KEEP_WARM_SECONDS"] = "0"
    runs = [("Test", bench.SHARED / "fruits-360" / "Test")] * 2
    runs += [(str(size), bench.CORPORA / f"corpus-{size}") for size in args.sizes]
    samples: list[dict] = []
    stop = threading.Event()

    def sampler() -> None:
        while not stop.is_set():
            for pid in _driver_jvms():
                sample = _sample(jcmd, pid)
                if sample is not None:
                    samples.append(sample | {"run": len(done)})
            stop.wait(4)

    done: list[dict] = []
    stop_drivers()
    threading.Thread(target=sampler, daemon=True).start()
    with tempfile.TemporaryDirectory() as work:
        for name, images in runs:
            run = bench.materialize(
                images, Path(work) / f"storage-{len(done)}", Path(work) / f"home-{len(done)}", settings=settings
            )
            mine = [s for s in samples if s["run"] == len(done)]
            peak = max(mine, key=lambda s: s["rss_mb"]) if mine else {}
            done.append(
                {
                    "images": name,
                    "seconds": round(run["seconds"], 1),
                    "peak_pss_gb": round(run["peak_pss_gb"], 3),
                    "pss_gb_by_process": {k: round(v, 3) for k, v in run["peak_pss_gb_by_process"].items()},
                    "jvm_at_its_peak_mb": {k: round(v) for k, v in peak.items() if k != "run"},
                }
            )
            print(json.dumps(done[-1]), flush=True)
    stop.set()
    stop_drivers()
    for run in done:
        jvm = run["jvm_at_its_peak_mb"]
        outside = jvm.get("rss_mb", 0) - jvm.get("nmt_mb", 0)
        print(
            f"{run['images']:>6}: peak PSS {run['peak_pss_gb']:.2f} GB, JVM RSS {jvm.get('rss_mb', 0)} MB = heap "
            f"{jvm.get('Java Heap', 0)} + rest of NMT {jvm.get('nmt_mb', 0) - jvm.get('Java Heap', 0)} "
            f"+ outside NMT {outside}"
        )


if __name__ == "__main__":
    main()
