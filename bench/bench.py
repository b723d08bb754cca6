"""Side-by-side speed of the seed notebook's pipeline, the bare engine, and the full asset graph.

One run, one machine, the same images: ratios between the three are the figures
that count (absolute timings drift between machines and runs).

    python bench/bench.py [--images DIR] [--seed-baseline PATH] [--skip-seed]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from fruits_assets.assets.config import FeaturizationConfig
from fruits_assets.spark.config import CLASS_ARCHIVE
from fruits_assets.vision.paths import IMAGE_EXTENSIONS

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


def _kind(pid: int, root: int) -> str:
    if pid == root:
        return "dagster"
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            command = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return "other"
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


def _tree_memory(root: int) -> dict[str, dict[str, int]]:
    """RSS and PSS of a process and all its descendants, by kind: dagster, the JVM, Python workers, other.

    Descendants come from each process's parent in `/proc/<pid>/stat`, so each is counted once
    (walking `/proc/<pid>/task/*/children` lists some twice). PSS divides each shared page among
    the processes sharing it: forked Python workers, and a child the JVM spawns, which shares the
    JVM's whole memory until it runs its command, count once; in RSS they count again each time.
    """
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    parents[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])  # after the command
            except (FileNotFoundError, ProcessLookupError):
                continue
    memory: dict[str, dict[str, int]] = {"rss": {}, "pss": {}}
    stack = [root]
    while stack:
        p = stack.pop()
        stack += [child for child, parent in parents.items() if parent == p]
        try:
            rss, pss = _memory(p)
        except (FileNotFoundError, ProcessLookupError, KeyError):
            continue
        kind = _kind(p, root)
        memory["rss"][kind] = memory["rss"].get(kind, 0) + rss
        memory["pss"][kind] = memory["pss"].get(kind, 0) + pss
    return memory


def timed_run(cmd: list[str], env: dict[str, str]) -> tuple[float, dict[str, dict[str, int]], str]:
    """Run `cmd`, sampling its process tree's memory; returns seconds, RSS and PSS by kind at their peaks, stdout."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peaks: dict[str, dict[str, int]] = {"rss": {}, "pss": {}}
    done = threading.Event()

    def sample():
        while not done.is_set():
            now = _tree_memory(proc.pid)
            for measure, by_kind in now.items():
                if sum(by_kind.values()) > sum(peaks[measure].values()):
                    peaks[measure] = by_kind
            done.wait(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, _ = proc.communicate()
    seconds = time.perf_counter() - start
    done.set()
    sampler.join()
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[:3]} failed ({proc.returncode}):\n{out[-4000:]}")
    return seconds, peaks, out


def _peak_figures(peaks: dict[str, dict[str, int]]) -> dict:
    return {
        "peak_rss_gb": sum(peaks["rss"].values()) / 1e9,
        "peak_pss_gb": sum(peaks["pss"].values()) / 1e9,
        "peak_pss_gb_by_process": {kind: size / 1e9 for kind, size in sorted(peaks["pss"].items())},
    }


def image_files(root: Path) -> list[Path]:
    """The files the pipeline reads: image extensions in any case, recursively."""
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


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
    paths = [str(p) for p in image_files(images)]
    chunks = [paths[i::workers] for i in range(workers)]
    with mp.get_context("spawn").Pool(workers) as pool:
        results = pool.map(_decode_worker, chunks)
    return sum(n / s for n, s in results)


def full_materialization(images: Path, work: Path) -> dict:
    from dagster import DagsterEventType, DagsterInstance

    home, storage = work / "dagster_home", work / "storage"
    home.mkdir(parents=True)
    env = {**os.environ, "FRUITS_IMAGES": str(images), "FRUITS_STORAGE": str(storage), "DAGSTER_HOME": str(home)}
    dagster = str(Path(sys.executable).with_name("dagster"))
    cmd = [dagster, "asset", "materialize", "-m", "fruits_assets.definitions", "--select", "*"]
    seconds, peak, _ = timed_run(cmd, env)
    instance = DagsterInstance.from_config(str(home))
    [run] = instance.get_runs()
    starts, steps = {}, {}
    for record in instance.all_logs(run.run_id):
        event = record.dagster_event
        if event is None or event.step_key is None:
            continue
        if event.event_type == DagsterEventType.STEP_START:
            starts[event.step_key] = record.timestamp
        elif event.event_type == DagsterEventType.STEP_SUCCESS:
            steps[event.step_key] = record.timestamp - starts[event.step_key]
    observed = {}
    for record in instance.all_logs(run.run_id, of_type=DagsterEventType.ASSET_OBSERVATION):
        for key, value in record.dagster_event.event_specific_data.asset_observation.metadata.items():
            observed[key] = value.value
    n = len(image_files(images))
    return {
        "images": n,
        "seconds": seconds,
        "img_per_s": n / seconds,
        **_peak_figures(peak),
        "steps": steps,
        "featurization": observed,
    }


def _run_twice(images: str, work: str) -> list[float]:
    from fruits_assets.definitions import build_defs
    from fruits_assets.settings import Settings

    seconds = []
    for run in ("first", "second"):
        job = build_defs(Settings(images=images, storage=f"{work}/{run}")).resolve_implicit_global_asset_job_def()
        start = time.perf_counter()
        if not job.execute_in_process().success:
            raise RuntimeError(f"the {run} in-process run failed")
        seconds.append(time.perf_counter() - start)
    return seconds


def warm_rerun(images: Path, work: Path) -> dict:
    """The graph run twice in one process, each into fresh storage.

    The second run finds the JVM, its JIT and the Python workers warm: it bounds
    what a Spark that outlives a run could gain. Neither figure includes the
    process start or Dagster's CLI.
    """
    # The executor waits for its worker to exit (a Pool would terminate it, Spark and all, mid-shutdown).
    with ProcessPoolExecutor(max_workers=1, mp_context=mp.get_context("spawn")) as pool:
        first, second = pool.submit(_run_twice, str(images), str(work)).result()
    n = len(image_files(images))
    return {"images": n, "first_seconds": first, "second_seconds": second, "img_per_s": n / second}


def stage_shares(full: dict, workers: int) -> dict[str, float]:
    """Wall-clock seconds per stage of the full run.

    Decode and model times are summed over the Python workers running side by
    side, so their wall-clock share is that sum divided by the number of workers.
    """
    steps, f = full["steps"], full["featurization"]
    checks = sum(v for k, v in steps.items() if k not in ASSET_STEPS)
    decode, model = f["decode_seconds"] / workers, f["model_seconds"] / workers
    stages = {
        "listing and reading images (raw_images)": steps["raw_images"],
        "labels and screening (screen_images)": steps["screen_images"],
        "decode and resize": decode,
        "model": model,
        "rest of featurization (Arrow transfer, Parquet write)": steps["mobilenet_features"] - decode - model,
        "PCA fit (pca_model)": steps["pca_model"],
        "projection and its Parquet (pca_features)": steps["pca_features"],
        "the CSV (pca_features_csv)": steps["pca_features_csv"],
        "asset checks": checks,
    }
    stages["start-up and orchestration"] = full["seconds"] - sum(stages.values())
    return stages


ASSET_STEPS = ("raw_images", "screen_images", "mobilenet_features", "pca_model", "pca_features", "pca_features_csv")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=Path, default=SHARED / "fruits-360" / "Test")
    parser.add_argument(
        "--large-images",
        type=Path,
        default=SHARED / "fruits-360",
        help="a larger tree, for the memory comparison (Training + Test)",
    )
    parser.add_argument("--seed-baseline", type=Path, default=SHARED / "bench" / "seed_baseline.py")
    parser.add_argument("--skip-seed", action="store_true", help="leave the seed baseline out (it takes minutes)")
    parser.add_argument("--engine", default="litert")
    parser.add_argument("--batch-size", type=int, default=FeaturizationConfig().batch_size)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results.json")
    args = parser.parse_args()

    workers = os.cpu_count() or 1
    results: dict = {"machine": machine(), "driver_class_archive": CLASS_ARCHIVE.is_file()}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        results["full"] = full_materialization(images=args.images.resolve(), work=work / "full")
        results["bare_engine"] = bare_engine(args.engine, args.batch_size, workers, results["full"]["images"])
        results["decode_img_per_s"] = decode_rate(args.images, workers)
        results["full_large"] = full_materialization(images=args.large_images.resolve(), work=work / "large")
        results["warm"] = warm_rerun(args.images.resolve(), work / "warm")
        if not args.skip_seed:
            results["seed"] = seed_baseline(args.images, args.seed_baseline, work)
    report(results)
    args.out.write_text(json.dumps(results, indent=2, default=float))


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


def report(r: dict) -> None:
    full, bare = r["full"], r["bare_engine"]
    print(f"machine: {r['machine']}; Spark driver class archive: {'yes' if r['driver_class_archive'] else 'no'}")
    runs = [("full materialization, every asset", full), ("  same, Training + Test", r["full_large"])]
    if "seed" in r:
        runs.insert(0, ("seed baseline (notebook)", r["seed"]))
    print(f"{'run':40} {'images':>7} {'seconds':>8} {'img/s':>8} {'peak RSS GB':>12} {'peak PSS GB':>12}")
    for name, run in runs:
        print(
            f"{name:40} {run['images']:7d} {run['seconds']:8.1f} {run['img_per_s']:8.1f} "
            f"{run['peak_rss_gb']:12.2f} {run['peak_pss_gb']:12.2f}"
        )
    large = r["full_large"]
    feat = full["featurization"]
    feat_rate = feat["images_per_second"]
    print(
        f"bare engine ({bare['engine']}, batch {bare['batch_size']}, {bare['workers']} x 1 thread): "
        f"{bare['img_per_s']:.1f} img/s; decode and resize alone: {r['decode_img_per_s']:.1f} img/s"
    )
    print(
        f"featurization stage: {feat_rate:.1f} img/s ({feat['images']} images in {feat['stage_seconds']:.1f} s, "
        "first task start to last features, by the workers' clocks)"
    )
    print("stages of the full materialization:")
    stages = stage_shares(full, r["bare_engine"]["workers"])
    for name, sec in stages.items():
        print(f"  {name:48} {sec:6.1f} s {100 * sec / full['seconds']:5.1f} %")
    warm = r["warm"]
    print(
        f"the graph twice in one process: {warm['first_seconds']:.1f} s, then {warm['second_seconds']:.1f} s "
        f"with the JVM and workers warm ({warm['img_per_s']:.1f} img/s)"
    )
    print("ratios:")
    if "seed" in r:
        print(f"  full materialization / seed baseline (img/s): {full['img_per_s'] / r['seed']['img_per_s']:.1f}x")
        print(f"  warm second run / seed baseline (img/s):      {warm['img_per_s'] / r['seed']['img_per_s']:.1f}x")
    print(f"  featurization stage / bare engine (img/s):    {feat_rate / bare['img_per_s']:.2f}")
    print(f"  peak PSS, Training + Test / Test:             {large['peak_pss_gb'] / full['peak_pss_gb']:.2f}")
    print(f"  peak RSS, Training + Test / Test:             {large['peak_rss_gb'] / full['peak_rss_gb']:.2f}")
    for name, run in (("Test", full), ("Training + Test", large)):
        parts = ", ".join(f"{kind} {gb:.2f}" for kind, gb in run["peak_pss_gb_by_process"].items())
        print(f"  PSS at the peak of {name}: {parts} GB")


if __name__ == "__main__":
    main()
