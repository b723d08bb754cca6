"""Everything a fresh environment needs before its first run, made once: `python -m fruits_assets.prepare`.

`make setup` (and the EMR release) calls it. Three things, each skipped when present:
- the LiteRT model, converted from the Keras port of the verified checkpoint;
- the jars Spark needs beside its own: Delta Lake, and `hadoop-aws` with its AWS SDK,
  resolved from Maven Central by Spark's own resolver, each set into a folder of its
  own, so that runs name the files and no session resolves anything as it starts;
- the Spark driver's class-data sharing archive (AppCDS), written by a JVM that ran
  the whole graph on a few generated images, and installed only once a fresh
  driver started with `-Xshare:on` has mapped it (a truncated archive crashes the JVM).
Runtime modules only read what this made.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

from fruits_assets.spark.config import (
    CLASS_ARCHIVE,
    JARS,
    JAVA_OPTIONS,
    app_config,
    delta_sql_config,
    jar_files,
    jars_config,
    local_config,
    packages,
)
from fruits_assets.vision.engines import MODEL_DIR, convert_to_litert, litert_model_path, model_recipe

STEPS = ("litert", "jars", "class-archive")
SAMPLE_LABELS = ("Apple Red 1", "Banana 1")


def prepare_litert_model(model_dir: Path = MODEL_DIR) -> Path:
    """The LiteRT model of the current weights, code and converter, converted unless it is there already."""
    from fruits_assets.vision.mobilenet import mobilenet_v2_from_torch
    from fruits_assets.vision.weights import load_state_dict

    path = litert_model_path(model_dir)
    record = path.with_suffix(".json")
    if not (path.is_file() and record.is_file()):
        flatbuffer = convert_to_litert(mobilenet_v2_from_torch(load_state_dict()))
        path.parent.mkdir(parents=True, exist_ok=True)
        for target, content in ((path, flatbuffer), (record, json.dumps(_made_of()).encode())):
            partial = target.with_name(f".{target.name}.{os.getpid()}")
            partial.write_bytes(content)
            partial.replace(target)
    return path


def _made_of() -> dict[str, object]:
    """What the LiteRT model is made of: the weights, the model's code, the converter's version."""
    return {**model_recipe(), "converter": {"tensorflow": metadata.version("tensorflow")}}


def _spark_session(config: dict[str, str]):
    """A local session as runs start theirs (`config` added), outside Dagster; without Delta's SQL extension
    unless Delta's jars are in `config`."""
    from pyspark.sql import SparkSession

    os.environ["PYSPARK_PYTHON"] = sys.executable
    app = app_config(sys.executable, sys.executable)
    if "spark.jars" not in config:
        app = {k: v for k, v in app.items() if k not in delta_sql_config()}
    return SparkSession.builder.config(map=app | config).getOrCreate()


def fetch_jars(jars: Path = JARS) -> None:
    """Each jar set, resolved by Spark's resolver (Ivy) from Maven Central, copied into `jars/<name>/jars/`."""
    for name, package in packages().items():
        folder = jars / name / "jars"
        if list(folder.glob("*.jar")):
            continue
        with tempfile.TemporaryDirectory() as work:
            resolved = Path(work) / "resolved"
            if in_fresh_process(_resolve, local_config("local[1]") | {"spark.jars.packages": package}, resolved) != 0:
                raise RuntimeError(f"could not resolve {package} from Maven Central")
            staging = folder.with_name(".jars-partial")
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir(parents=True)
            for jar in resolved.read_text().split(","):
                source = Path(jar.removeprefix("file:"))
                shutil.copy2(source, staging / source.name)
            staging.rename(folder)
        jar_files(name, jars)  # a clear error if the resolution left nothing


def _resolve(config: dict[str, str], out: Path) -> None:
    """Start a session that resolves `spark.jars.packages`; write the local jars it resolved to `out`."""
    spark = _spark_session(config)
    out.write_text(spark.sparkContext.getConf().get("spark.jars"))
    spark.stop()


def write_sample_images(root: Path) -> None:
    """A few 100x100 JPEGs in the Fruits-360 layout, and a file that is not an image (a rejection)."""
    from PIL import Image

    for shade, label in enumerate(SAMPLE_LABELS):
        folder = root / "Training" / label
        folder.mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (100, 100), (200 - 60 * shade, 40 * i, 30)).save(folder / f"{i}.jpg")
    (root / "Training" / SAMPLE_LABELS[0] / "broken.jpg").write_bytes(b"not a jpeg")


def _run_graph_then_dump(archive: Path, work: Path) -> None:
    """Materialize every asset on sample images in a driver JVM that writes `archive` as it exits."""
    from pyspark import SparkContext

    from fruits_assets.definitions import build_defs
    from fruits_assets.settings import Settings

    images, storage = work / "images", work / "storage"
    write_sample_images(images)
    dump = {JAVA_OPTIONS: f"-XX:ArchiveClassesAtExit={archive} -Xlog:cds=off"}
    spark = _spark_session(local_config() | jars_config("delta") | dump)
    jvm = SparkContext._gateway.proc
    try:  # the graph's resource gets the session started above
        defs = build_defs(Settings(images=str(images), storage=str(storage)))
        if not defs.resolve_implicit_global_asset_job_def().execute_in_process().success:
            raise RuntimeError("the sample run failed")
    finally:
        spark.stop()
        jvm.stdin.close()  # the gateway exits when its stdin closes; the JVM writes the archive as it exits
        jvm.wait()


def start_with(archive: Path) -> None:
    """Start a local session that must map `archive` (`-Xshare:on` makes the JVM fail otherwise)."""
    crash_report = Path(tempfile.gettempdir()) / "fruits-jvm-archive-check-%p.log"  # not in the working directory
    options = f"-XX:SharedArchiveFile={archive} -Xshare:on -XX:ErrorFile={crash_report}"
    spark = _spark_session(local_config("local[1]") | jars_config("delta") | {JAVA_OPTIONS: options})
    spark.range(1).count()
    spark.stop()


def in_fresh_process(target: Callable[..., None], *args: object) -> int:
    """Run `target` in a new interpreter: each needs its own driver JVM, started and ended with it."""
    process = multiprocessing.get_context("spawn").Process(target=target, args=args)
    process.start()
    process.join()
    return process.exitcode


def build_class_archive(archive: Path = CLASS_ARCHIVE) -> bool:
    """Write `archive` from a run of the whole graph, then check a driver maps it; True when it does.

    The archive is written beside its final name and renamed only once checked.
    """
    archive.parent.mkdir(parents=True, exist_ok=True)
    candidate = archive.with_name(f".{archive.name}.{os.getpid()}")
    try:
        with tempfile.TemporaryDirectory() as work:
            if in_fresh_process(_run_graph_then_dump, candidate, Path(work)) != 0 or not candidate.is_file():
                return False
        if in_fresh_process(start_with, candidate) != 0:
            return False
        candidate.replace(archive)
        return True
    finally:
        candidate.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=STEPS, action="append", help="prepare only this (repeatable)")
    steps = parser.parse_args(argv).only or STEPS
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"  # TensorFlow's C++ start-up lines, before it is imported
    if "litert" in steps:
        path = prepare_litert_model()
        print(f"LiteRT model ready: {path} ({path.stat().st_size / 1e6:.1f} MB)")
    if "jars" in steps:
        fetch_jars()
        print(f"Delta Lake, hadoop-aws and its AWS SDK are in {JARS}")
    if "class-archive" in steps:
        if build_class_archive():
            print(f"Spark driver class archive ready: {CLASS_ARCHIVE} ({CLASS_ARCHIVE.stat().st_size / 1e6:.0f} MB)")
        else:
            CLASS_ARCHIVE.unlink(missing_ok=True)
            print("note: no Spark driver class archive (see above): runs start their JVM slower, same results")


if __name__ == "__main__":
    main()
