"""What a run costs: the seed notebook, the bare engine and the feature pipeline, side by side, in one run.

One run, one machine, the same images: the ratios between them are the figures that
count (absolute timings drift between machines and runs). Measured:
- `Test` (1,714 real images): the feature pipeline (images to the CSV, the
  `FEATURE_PIPELINE` selection), then the classification steps on top of it, and the
  seed notebook's pipeline;
- corpora of 20,000 and 40,000 images (`make bench-scale`: 40,000 and 200,000) generated
  from ../shared (`bench/corpus.py`): the feature pipeline on fresh storage, a rerun
  with nothing new, a rerun after adding 1% new images and one after removing them
  again (a merge that deletes in every folder); at 40,000, also every
  asset (`--select '*'`) on fresh storage and its rerun after adding the same 1%;
- the runs whose ratio is a fixed cost against a full run (`Test` on the warm driver,
  the +1% reruns) `REPEATS` times: the first and the median are reported, with every
  sample, as the same run varies by up to a fifth from one minute to the next here;
  so is the ratio of the largest run's peak memory to `Test`'s, whose peak varies too;
- the bare engine (the model alone, as the workers run it) and decoding alone.

    python bench/bench.py [--sizes 20000 40000 200000] [--whole-graph-sizes 40000] [--skip-seed]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import corpus

from fruits_assets.assets.config import IngestConfig
from fruits_assets.definitions import FEATURE_PIPELINE
from fruits_assets.resources.spark_resource import OWN_JVM
from fruits_assets.spark.config import CLASS_ARCHIVE
from fruits_assets.spark.warm_driver import stop_drivers

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
CORPORA = ROOT / "build" / "bench"
WARM = "FRUITS_SPARK_KEEP_WARM_SECONDS"
STEP_NAMES = ("raw_images", "screen_and_featurize", "pca_model", "project_features")  # the feature pipeline's
# the runs of a size besides its full run, whose steps the report lists (the whole-graph ones where measured)
REPEATS = 3  # samples of the short runs whose ratios are reported as medians
RERUNS = ("unchanged", "one_percent_added", "one_percent_removed", "whole_graph_full", "whole_graph_one_percent_added")


WARM_DRIVER = b"fruits_assets.spark.warm_driver"  # the command line of a warm Spark driver's process
# How a run had its Spark, as its log says (`SparkResource`); a run that needed none says nothing.
SPARK_LINES = {
    "Spark: started a warm driver": "started a warm driver",
    "Spark: attached to the warm driver": "warm driver",
    OWN_JVM: "own JVM",
}


def _command(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except (FileNotFoundError, ProcessLookupError):
        return b""


def _kind(pid: int, root: int) -> str:
    if pid == root:
        return "dagster"
    command = _command(pid)
    if WARM_DRIVER in command:
        return "warm_driver"
    return "jvm" if b"java" in command else "python_workers" if b"pyspark.daemon" in command else "other"


def _memory(pid: int) -> tuple[int, int]:
    """Resident and proportional set sizes (RSS, PSS) of a process, in bytes."""
    sizes = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            name, _, value = line.partition(":")
            if name in ("Rss", "Pss"):
                sizes[name] = int(value.split()[0]) * 1024
    return sizes["Rss"], sizes["Pss"]


def _parents() -> dict[int, int]:
    """Each process's parent, from `/proc/<pid>/stat` (walking `/proc/<pid>/task/*/children` lists some twice)."""
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    parents[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])  # after the command
            except (FileNotFoundError, ProcessLookupError):
                continue
    return parents


def _tree_memory(roots: list[int], run: int, parents: dict[int, int], seen: set[int]) -> dict[str, dict[str, int]]:
    """RSS and PSS of processes and all their descendants (each once: `seen`), by kind: dagster (the run's
    process), the warm driver's Python side, the JVM, Python workers, other.

    PSS divides each shared page among the processes sharing it: forked Python workers, and a child the JVM
    spawns, which shares the JVM's whole memory until it runs its command, count once; in RSS they count again
    each time.
    """
    memory: dict[str, dict[str, int]] = {"rss": {}, "pss": {}}
    stack = list(roots)
    while stack:
        p = stack.pop()
        if p in seen:
            continue
        seen.add(p)
        stack += [child for child, parent in parents.items() if parent == p]
        try:
            rss, pss = _memory(p)
        except (FileNotFoundError, ProcessLookupError, KeyError):
            continue
        kind = _kind(p, run)
        memory["rss"][kind] = memory["rss"].get(kind, 0) + rss
        memory["pss"][kind] = memory["pss"].get(kind, 0) + pss
    return memory


def _memory_sum(a: dict[str, dict[str, int]], b: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
    return {m: {k: a[m].get(k, 0) + b[m].get(k, 0) for k in a[m].keys() | b[m].keys()} for m in a}


def timed_run(cmd: list[str], env: dict[str, str]) -> tuple[float, dict[str, dict[str, int]], str]:
    """Run `cmd`, sampling its process tree's memory; returns seconds, RSS and PSS by kind at their peaks, stdout.

    A warm Spark driver the run attached to (its output says so) is not the run's descendant: its process tree
    (the driver, its JVM and workers) is sampled beside the run's and counted with it when the run used it.
    `pss_each` holds each kind's own peak PSS, which may fall at another moment than the tree's.
    """
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peaks: dict[str, dict[str, dict[str, int]]] = {
        used: {"rss": {}, "pss": {}, "pss_each": {}} for used in ("alone", "with_driver")
    }
    done = threading.Event()

    def sample():
        while not done.is_set():
            parents, seen = _parents(), set()
            alone = _tree_memory([proc.pid], proc.pid, parents, seen)
            drivers = [p for p in parents if p not in seen and WARM_DRIVER in _command(p)]
            both = _memory_sum(alone, _tree_memory(drivers, proc.pid, parents, seen))
            for used, now in (("alone", alone), ("with_driver", both)):
                for measure, by_kind in now.items():
                    if sum(by_kind.values()) > sum(peaks[used][measure].values()):
                        peaks[used][measure] = by_kind
                for kind, size in now["pss"].items():
                    peaks[used]["pss_each"][kind] = max(peaks[used]["pss_each"].get(kind, 0), size)
            done.wait(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, _ = proc.communicate()
    seconds = time.perf_counter() - start
    done.set()
    sampler.join()
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[:3]} failed ({proc.returncode}):\n{out[-4000:]}")
    used = "with_driver" if spark_of(out) in ("started a warm driver", "warm driver") else "alone"
    return seconds, peaks[used], out


def spark_of(out: str) -> str:
    """How a run had its Spark: a warm driver it started, one it attached to, a JVM of its own, or none."""
    return next((how for line, how in SPARK_LINES.items() if line in out), "none")


def _peak_figures(peaks: dict[str, dict[str, int]]) -> dict:
    return {
        "peak_rss_gb": sum(peaks["rss"].values()) / 1e9,
        "peak_pss_gb": sum(peaks["pss"].values()) / 1e9,
        "peak_pss_gb_by_process": {kind: size / 1e9 for kind, size in sorted(peaks["pss"].items())},
        "own_peak_pss_gb_by_process": {kind: size / 1e9 for kind, size in sorted(peaks["pss_each"].items())},
    }


def files_under(root: Path) -> int:
    return sum(1 for p in root.rglob("*") if p.is_file())


def seed_baseline(images: Path, script: Path, work: Path) -> dict:
    """The notebook's pipeline as written, with one setting: a fresh Python worker per task.

    With TensorFlow 2.21 one eager MobileNetV2 call on a batch of ~86 images
    holds ~8.6 GB in a worker, and each task builds one more model in the same
    worker: two reused workers exhaust 24 GB and the run dies. Fresh workers keep
    it alive at the cost of importing TensorFlow once per task (counted in its time).
    """
    env = {
        **os.environ,
        "PYSPARK_PYTHON": sys.executable,
        "SPARK_LOCAL_IP": "127.0.0.1",
        "PYSPARK_SUBMIT_ARGS": "--conf spark.python.worker.reuse=false pyspark-shell",
    }
    seconds, peak, out = timed_run([sys.executable, str(script), str(images), str(work / "seed_out")], env)
    line = next(line for line in out.splitlines() if line.startswith("SEED_BASELINE"))
    n = int(line.split("images=")[1].split()[0])
    return {"images": n, "seconds": seconds, "img_per_s": n / seconds, **_peak_figures(peak)}


def _engine_worker(args) -> float:
    engine, batch_size, batches = args
    import numpy as np

    from fruits_assets.vision.engines import build_engine, engine_payload

    model = build_engine(engine, engine_payload(engine), threads=1)
    pixels = np.random.default_rng(0).integers(0, 256, (batch_size, 224, 224, 3), dtype=np.uint8)
    model.features(pixels)  # warm-up: allocation, XNNPACK packing
    start = time.perf_counter()
    for _ in range(batches):
        model.features(pixels)
    return batches * batch_size / (time.perf_counter() - start)


def bare_engine(engine: str, batch_size: int, workers: int, images: int) -> dict:
    """The model alone, as the pipeline runs it: `workers` processes of one thread, same batch."""
    batches = max(4, images // (workers * batch_size))
    with mp.get_context("spawn").Pool(workers) as pool:
        rates = pool.map(_engine_worker, [(engine, batch_size, batches)] * workers)
    return {"engine": engine, "batch_size": batch_size, "workers": workers, "img_per_s": sum(rates)}


def _decode_worker(paths: list[str]) -> tuple[int, float]:
    from fruits_assets.vision.preprocess import decode_resized

    contents = [Path(p).read_bytes() for p in paths]
    start = time.perf_counter()
    for c in contents:
        decode_resized(c)
    return len(contents), time.perf_counter() - start


def decode_rate(images: Path, workers: int) -> float:
    paths = [str(p) for p in sorted(images.rglob("*.jpg"))]
    chunks = [paths[i::workers] for i in range(workers)]
    with mp.get_context("spawn").Pool(workers) as pool:
        results = pool.map(_decode_worker, chunks)
    return sum(n / s for n, s in results)


def materialize(
    images: Path, storage: Path, home: Path, select: str = FEATURE_PIPELINE, settings: dict[str, str] | None = None
) -> dict:
    """`dagster asset materialize --select …` as a user runs it (with `settings` added to its environment); its
    time, peak memory, where the time went, and how it had its Spark (`spark_of`)."""
    from dagster import DagsterEventType, DagsterInstance

    home.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "FRUITS_IMAGES": str(images), "FRUITS_STORAGE": str(storage), "DAGSTER_HOME": str(home)}
    env |= settings or {}
    dagster = str(Path(sys.executable).with_name("dagster"))
    cmd = [dagster, "asset", "materialize", "-m", "fruits_assets.definitions", "--select", select]
    seconds, peak, out = timed_run(cmd, env)
    instance = DagsterInstance.from_config(str(home))
    run = instance.get_runs(limit=1)[0]
    starts, steps, featurization = {}, {}, {}
    for record in instance.all_logs(run.run_id):
        event = record.dagster_event
        if event is None or event.step_key is None:
            continue
        if event.event_type == DagsterEventType.STEP_START:
            starts[event.step_key] = record.timestamp
        elif event.event_type == DagsterEventType.STEP_SUCCESS:
            steps[event.step_key] = record.timestamp - starts[event.step_key]
        elif event.event_type == DagsterEventType.ASSET_MATERIALIZATION:
            materialization = event.event_specific_data.materialization
            if materialization.asset_key.to_user_string() == "mobilenet_features":
                featurization = {k: v.value for k, v in materialization.metadata.items() if k != "preview"}
    n = files_under(images)
    return {
        "images": n,
        "seconds": seconds,
        "img_per_s": n / seconds,
        "spark": spark_of(out),
        **_peak_figures(peak),
        "steps": steps,
        "featurization": featurization,
    }


def size_runs(size: int, work: Path, workers: int, whole_graph: bool) -> dict:
    """The feature pipeline on `size` generated images, then with nothing new, after adding 1%, after removing
    that 1% again; with `whole_graph`, also every asset's full run and +1% rerun (`--select '*'`) on a storage
    of its own."""
    images, extra = CORPORA / f"corpus-{size}", CORPORA / f"extra-{size}"
    corpus.generate(SHARED / "fruits-360", images, 0, size, workers)
    corpus.generate(SHARED / "fruits-360", extra, size, size // 100, workers)
    storage, home = work / f"storage-{size}", work / f"home-{size}"
    runs = {"full": materialize(images, storage, home / "full")}
    runs["unchanged"] = materialize(images, storage, home / "unchanged")
    added_runs, removed_runs, added = _one_percent_cycles(images, extra, storage, home, FEATURE_PIPELINE, True)
    runs["added"] = added
    runs["one_percent_added"], runs["one_percent_removed"] = added_runs[0], removed_runs[0]
    runs["one_percent_added_seconds"] = [r["seconds"] for r in added_runs]
    runs["one_percent_removed_seconds"] = [r["seconds"] for r in removed_runs]
    shutil.rmtree(storage)
    if whole_graph:
        storage = work / f"storage-{size}-all"
        runs["whole_graph_full"] = materialize(images, storage, home / "all-full", "*")
        whole_added, _, _ = _one_percent_cycles(images, extra, storage, home / "all", "*", False)
        runs["whole_graph_one_percent_added"] = whole_added[0]
        runs["whole_graph_one_percent_added_seconds"] = [r["seconds"] for r in whole_added]
        shutil.rmtree(storage)
    return runs


def _one_percent_cycles(
    images: Path, extra: Path, storage: Path, home: Path, select: str, last_removed: bool
) -> tuple[list[dict], list[dict], int]:
    """`REPEATS` times: the 1% added and a rerun, then gone again and a rerun (a merge that deletes rows in every
    folder; after the last cycle only if `last_removed`). The added runs, the removed runs, the images added."""
    added_runs: list[dict] = []
    removed_runs: list[dict] = []
    for i in range(REPEATS):
        with _added(extra, images) as added:
            added_runs.append(materialize(images, storage, home / f"added-{i}", select))
        if last_removed or i + 1 < REPEATS:
            removed_runs.append(materialize(images, storage, home / f"removed-{i}", select))
    return added_runs, removed_runs, added


@contextlib.contextmanager
def _added(extra: Path, images: Path) -> Iterator[int]:
    """The 1% of new images copied into the corpus for the block's runs, then removed again."""
    added = []
    try:
        for source in sorted(extra.rglob("*.jpg")):
            target = images / source.relative_to(extra)
            shutil.copy2(source, target)
            added.append(target)
        yield len(added)
    finally:
        for target in added:
            target.unlink()


def stages(run: dict, workers: int) -> dict[str, float]:
    """Wall-clock seconds per stage of a run. Read, decode and model times are summed over the Python workers
    side by side, so their wall-clock share is that sum divided by the workers."""
    steps, f = run["steps"], run["featurization"]
    read, decode, model = (f.get(k, 0.0) / workers for k in ("read_seconds", "decode_seconds", "model_seconds"))
    parts = {
        "listing and the listing's table (raw_images), JVM start included": steps["raw_images"],
        "planning, commits, class index and checks (screen_and_featurize)": steps["screen_and_featurize"]
        - read
        - decode
        - model,
        "reading files (workers)": read,
        "decoding and resizing (workers)": decode,
        "model (workers)": model,
        "moments and fit (pca_model)": steps["pca_model"],
        "projection, table, CSV and its check (project_features)": steps["project_features"],
    }
    parts["Dagster start-up and orchestration"] = run["seconds"] - sum(parts.values())
    return parts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=Path, default=SHARED / "fruits-360" / "Test")
    parser.add_argument("--sizes", type=int, nargs="*", default=[20000, 40000])
    parser.add_argument(
        "--whole-graph-sizes",
        type=int,
        nargs="*",
        default=[40000],
        help="sizes (among --sizes) also run with every asset, a full run and a +1%% rerun",
    )
    parser.add_argument("--seed-baseline", type=Path, default=SHARED / "bench" / "seed_baseline.py")
    parser.add_argument("--skip-seed", action="store_true", help="leave the seed baseline out (it takes minutes)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results.json")
    args = parser.parse_args()

    workers = os.cpu_count() or 1
    config = IngestConfig()
    results: dict = {"machine": machine(), "driver_class_archive": CLASS_ARCHIVE.is_file(), "sizes": {}}
    stop_drivers()  # the first run starts a warm driver, as a user's first run of the day does
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        # `Test` with a JVM of the run's own (as before warm drivers, or with FRUITS_SPARK_KEEP_WARM_SECONDS=0),
        # then on fresh storage again with the warm driver the run before it started
        results["test_own_jvm"] = materialize(
            args.images.resolve(), work / "test-own", work / "test-own-home", settings={WARM: "0"}
        )
        results["test_first"] = materialize(args.images.resolve(), work / "test-first", work / "test-first-home")
        results["test"] = materialize(args.images.resolve(), work / "test-storage", work / "test-home")
        again = [
            materialize(args.images.resolve(), work / f"test-again-{i}", work / f"test-again-home-{i}")
            for i in range(1, REPEATS)
        ]
        results["test_seconds"] = [results["test"]["seconds"]] + [run["seconds"] for run in again]
        # the peak's denominator in the ratio of peaks: `Test`'s own peak varies from run to run (2.2 to 2.5 GB)
        results["test_peak_pss_gb"] = [results["test"]["peak_pss_gb"]] + [run["peak_pss_gb"] for run in again]
        everything = materialize(args.images.resolve(), work / "test-storage", work / "test-home-all", "*")
        results["classification_steps"] = {k: v for k, v in everything["steps"].items() if k not in STEP_NAMES}
        for size in args.sizes:
            results["sizes"][str(size)] = size_runs(size, work, workers, size in args.whole_graph_sizes)
            args.out.write_text(json.dumps(results, indent=2, default=float))  # what a later failure would lose
        # a rate: 40,000 images (about two minutes) measure it as well as more would
        engine_images = min(max(args.sizes, default=0), 40000)
        results["bare_engine"] = bare_engine(config.engine, config.batch_size, workers, max(engine_images, 2000))
        results["decode_img_per_s"] = decode_rate(args.images, workers)
        if not args.skip_seed:
            results["seed"] = seed_baseline(args.images, args.seed_baseline, work)
    stop_drivers()
    args.out.write_text(json.dumps(results, indent=2, default=float))
    report(results, workers)


def machine() -> str:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        "?",
    )
    mem = (
        next(
            int(line.split()[1])
            for line in Path("/proc/meminfo").read_text().splitlines()
            if line.startswith("MemTotal")
        )
        / 2**20
    )
    return f"{os.cpu_count()} cores ({cpu}), {mem:.0f} GiB"


def report(r: dict, workers: int) -> None:
    bare = r["bare_engine"]["img_per_s"]
    print(f"machine: {r['machine']}; Spark driver class archive: {'yes' if r['driver_class_archive'] else 'no'}")
    print(
        f"bare engine ({r['bare_engine']['engine']}, batch {r['bare_engine']['batch_size']}, {workers} x 1 thread): "
        f"{bare:.1f} img/s; decoding and resizing alone: {r['decode_img_per_s']:.1f} img/s"
    )
    print(f"{'run':44} {'images':>7} {'seconds':>8} {'img/s':>8} {'peak RSS GB':>12} {'peak PSS GB':>12}  Spark")
    rows = [
        ("feature pipeline, Test, a JVM of its own", r["test_own_jvm"]),
        ("feature pipeline, Test, starts the driver", r["test_first"]),
        ("feature pipeline, Test, warm driver", r["test"]),
    ]
    for size, runs in r["sizes"].items():
        rows += [(f"feature pipeline, {size}", runs["full"]), (f"  rerun, nothing new, {size}", runs["unchanged"])]
        rows.append((f"  rerun, {runs['added']} new (1%), {size}", runs["one_percent_added"]))
        rows.append((f"  rerun, the {runs['added']} removed, {size}", runs["one_percent_removed"]))
        if "whole_graph_full" in runs:
            rows.append((f"every asset, {size}", runs["whole_graph_full"]))
            rows.append((f"  rerun, {runs['added']} new (1%), {size}", runs["whole_graph_one_percent_added"]))
    if "seed" in r:
        rows.insert(0, ("seed notebook pipeline, Test", r["seed"]))
    for name, run in rows:
        print(
            f"{name:44} {run['images']:7d} {run['seconds']:8.1f} {run['img_per_s']:8.1f} "
            f"{run['peak_rss_gb']:12.2f} {run['peak_pss_gb']:12.2f}  {run.get('spark', '')}"
        )
    print("ratios:")
    for size, runs in r["sizes"].items():
        full, added, unchanged = runs["full"], runs["one_percent_added"], runs["unchanged"]
        print(f"  feature pipeline, {size} / bare engine (img/s):  {full['img_per_s'] / bare:.2f}")
        samples = runs.get("one_percent_added_seconds", [added["seconds"]])
        print(f"  rerun after adding 1%, {size} / full run (s):    {_ratios(samples, full['seconds'])}")
        print(f"  rerun with nothing new, {size} / full run (s):   {unchanged['seconds'] / full['seconds']:.2f}")
        if "whole_graph_full" in runs:
            whole, whole_added = runs["whole_graph_full"], runs["whole_graph_one_percent_added"]
            samples = runs.get("whole_graph_one_percent_added_seconds", [whole_added["seconds"]])
            ratios = _ratios(samples, whole["seconds"])
            print(f"  every asset, rerun after adding 1%, {size} / its full run (s): {ratios}")
    if r["sizes"]:
        largest, test = r["sizes"][str(max(int(k) for k in r["sizes"]))]["full"], r["test"]
        pss = _ratios_to(largest["peak_pss_gb"], r.get("test_peak_pss_gb", [test["peak_pss_gb"]]), "GB")
        rss = largest["peak_rss_gb"] / test["peak_rss_gb"]
        print(f"  peak PSS, {largest['images']} images / Test:          {pss}")
        print(f"  peak RSS, {largest['images']} images / Test:          {rss:.2f}")
    if "seed" in r:
        for name, run in (("warm driver", r["test"]), ("a JVM of its own", r["test_own_jvm"])):
            speedup = run["img_per_s"] / r["seed"]["img_per_s"]
            print(f"  feature pipeline ({name}) / seed notebook, Test (img/s):  {speedup:.1f}x")
        if len(r.get("test_seconds", [])) > 1:
            samples = ", ".join(f"{x:.1f}" for x in r["test_seconds"])
            speedup = r["seed"]["seconds"] / statistics.median(r["test_seconds"])
            print(f"  feature pipeline (warm driver, median of {samples} s) / seed notebook:  {speedup:.1f}x")
    steps = ", ".join(f"{k} {v:.1f} s" for k, v in r["classification_steps"].items())
    print(f"classification, Test, on the features above (a second run, `--select '*'`): {steps}")
    for name, run in [("Test", r["test"])] + [(f"{k} images", v["full"]) for k, v in r["sizes"].items()]:
        print(f"stages of the run on {name} ({run['seconds']:.1f} s):")
        for stage, sec in stages(run, workers).items():
            print(f"  {stage:66} {sec:6.1f} s {100 * sec / run['seconds']:5.1f} %")
        parts = ", ".join(f"{kind} {gb:.2f}" for kind, gb in run["peak_pss_gb_by_process"].items())
        print(f"  PSS at the peak: {parts} GB")
    for size, runs in r["sizes"].items():
        for name in RERUNS:
            if name not in runs:
                continue
            run = runs[name]
            steps = ", ".join(f"{k} {v:.1f} s" for k, v in run["steps"].items())
            print(f"{name.replace('_', ' ')}, {size}: {steps}")
        print(f"mobilenet_features, {size}: " + merge_figures(runs))


def _ratios_to(value: float, samples: list[float], unit: str) -> str:
    """`value`'s ratio to the first sample, and to the samples' median when there are several."""
    if len(samples) == 1:
        return f"{value / samples[0]:.2f}"
    listed = ", ".join(f"{x:.2f}" for x in samples)
    return f"{value / samples[0]:.2f}; to the median {value / statistics.median(samples):.2f} ({listed} {unit})"


def _ratios(samples: list[float], full: float) -> str:
    """The first sample's ratio to `full`, and the median's when there are several."""
    if len(samples) == 1:
        return f"{samples[0] / full:.2f}"
    seconds = ", ".join(f"{x:.1f}" for x in samples)
    return f"{samples[0] / full:.2f}; median {statistics.median(samples) / full:.2f} ({seconds} s)"


def merge_figures(runs: dict) -> str:
    """What the +1% run and the run that removed that 1% again did to `mobilenet_features`: bytes each wrote and
    removed (rewrote), against the table's bytes before it."""
    full = runs["full"]["featurization"]
    parts = [f"chunks in the full run: {full.get('chunks', '?')}"]
    before = full
    for name in ("one_percent_added", "one_percent_removed"):
        after = runs[name]["featurization"]
        table = before.get("table_bytes") or 0
        removed, added = after.get("bytes_removed", 0) or 0, after.get("bytes_added", 0) or 0
        share = f"{removed / table:.1%}" if table else "?"
        parts.append(
            f"{name.replace('_', ' ')}: of {table / 1e6:.1f} MB, wrote {added / 1e6:.2f} MB and rewrote "
            f"(removed) {removed / 1e6:.2f} MB = {share}"
        )
        before = after
    return "; ".join(parts)


if __name__ == "__main__":
    main()
