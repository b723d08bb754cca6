"""`raw_images` alone on many files: its time and the peak memory of the Dagster process and of the JVM.

The listing is the one thing the driver holds that grows with the files, so this
measures it at a size the full bench takes half an hour to reach: `--files` empty
files (the listing never reads a file) in the Fruits-360 layout under
`build/bench/empty-<files>`, listed on fresh storage, then listed again after adding
1% new files (an append). Each kind of process is reported at its own peak.
To compare two checkouts, run it from each with `PYTHONPATH=<checkout>`.

    python bench/listing_memory.py [--files 200000]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench import CORPORA, _tree_memory

LABELS = 131  # as many folders as Fruits-360 has labels


def empty_tree(root: Path, files: int, first: int = 0, label: str | None = None) -> Path:
    """`files` empty JPEG names under `root/<split>/<label>/`; existing ones are kept."""
    for i in range(first, first + files):
        folder = root / ("Test" if i % 4 == 0 else "Training") / (label or f"Fruit {i % LABELS}")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"e{i:07d}.jpg").touch()
    return root


def listed(images: Path, storage: Path, home: Path) -> dict:
    """`dagster asset materialize --select raw_images`: seconds, and GB of PSS at each kind's own peak."""
    home.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "FRUITS_IMAGES": str(images), "FRUITS_STORAGE": str(storage), "DAGSTER_HOME": str(home)}
    dagster = str(Path(sys.executable).with_name("dagster"))
    cmd = [dagster, "asset", "materialize", "-m", "fruits_assets.definitions", "--select", "raw_images"]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak: dict[str, int] = {}
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            for kind, size in _tree_memory(proc.pid)["pss"].items():
                peak[kind] = max(peak.get(kind, 0), size)
            done.wait(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, _ = proc.communicate()
    done.set()
    sampler.join()
    if proc.returncode != 0:
        raise RuntimeError(f"raw_images failed ({proc.returncode}):\n{out[-4000:]}")
    return {"seconds": round(time.perf_counter() - start, 1), **{k: round(v / 1e9, 3) for k, v in peak.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=200_000)
    args = parser.parse_args()
    images = empty_tree(CORPORA / f"empty-{args.files}", args.files)
    label = "Added fruit"
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        print("first listing:", json.dumps(listed(images, work / "storage", work / "first")), flush=True)
        empty_tree(images, args.files // 100, args.files, label)
        try:
            print("1% added:     ", json.dumps(listed(images, work / "storage", work / "added")), flush=True)
        finally:
            for folder in images.glob(f"*/{label}"):
                for path in folder.iterdir():
                    path.unlink()
                folder.rmdir()


if __name__ == "__main__":
    main()
