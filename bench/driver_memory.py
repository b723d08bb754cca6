"""Steps on many empty files: their time and the peak memory of the Dagster process, the JVM and the workers.

Whether the driver grows with the files, at a size the full bench takes half an hour
to reach: `--files` empty files in the Fruits-360 layout under
`build/bench/empty-<files>` (the listing never reads a file; the screening reads each
and rejects it as empty), materialized on fresh storage (`--select`, `raw_images` by
default), then again after adding 1% new files (an append) unless `--no-rerun`.
Each kind of process is reported at its own peak. To compare two checkouts, run it
from each with `PYTHONPATH=<checkout>`.

    python bench/driver_memory.py [--files 200000] [--select raw_images,rejected_images,…] [--no-rerun]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from bench import CORPORA, materialize

LABELS = 131  # as many folders as Fruits-360 has labels


def empty_tree(root: Path, files: int, first: int = 0, label: str | None = None) -> Path:
    """`files` empty JPEG names under `root/<split>/<label>/`; existing ones are kept."""
    for i in range(first, first + files):
        folder = root / ("Test" if i % 4 == 0 else "Training") / (label or f"Fruit {i % LABELS}")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"e{i:07d}.jpg").touch()
    return root


def materialized(images: Path, storage: Path, home: Path, select: str) -> dict:
    """`dagster asset materialize --select …` as the bench runs it: seconds, and GB of PSS at each kind's own peak."""
    run = materialize(images, storage, home, select)
    return {"seconds": round(run["seconds"], 1)} | {
        kind: round(gb, 3) for kind, gb in run["own_peak_pss_gb_by_process"].items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=200_000)
    parser.add_argument("--select", default="raw_images", help="assets to materialize, as dagster's --select")
    parser.add_argument("--no-rerun", action="store_true", help="only the run on fresh storage")
    args = parser.parse_args()
    images = empty_tree(CORPORA / f"empty-{args.files}", args.files)
    label = "Added fruit"
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        first = materialized(images, work / "storage", work / "first", args.select)
        print("fresh storage:", json.dumps(first), flush=True)
        if args.no_rerun:
            return
        empty_tree(images, args.files // 100, args.files, label)
        try:
            added = materialized(images, work / "storage", work / "added", args.select)
            print("1% added:     ", json.dumps(added), flush=True)
        finally:
            for folder in images.glob(f"*/{label}"):
                for path in folder.iterdir():
                    path.unlink()
                folder.rmdir()


if __name__ == "__main__":
    main()
