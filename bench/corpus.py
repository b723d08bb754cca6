"""Larger corpora for the bench, generated from ../shared/fruits-360, deterministically.

Image i is a perturbed copy of the (i mod n)-th real image: a small random crop and
rescale, a brightness change, a mirror for odd rounds, re-encoded as a 100x100 JPEG.
Every image is distinct (its own bytes and SHA-256), labels and splits are those of
its source, and the same n always gives the same files, so figures compare across
runs and machines. Files are written once and kept (`build/bench/`).
"""

from __future__ import annotations

import hashlib
import io
import multiprocessing as mp
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance

SIZE = 100


def sources(shared: Path) -> list[tuple[Path, str, str]]:
    """(file, split, label) of every real image, in a fixed order."""
    files = sorted(shared.glob("*/*/*.jpg"))
    return [(f, f.parent.parent.name, f.parent.name) for f in files]


def perturbed(source: bytes, i: int) -> bytes:
    rng = np.random.default_rng(i)
    with Image.open(io.BytesIO(source)) as image:
        image = image.convert("RGB")
        left, top = rng.integers(0, 6, size=2)
        right, bottom = SIZE - rng.integers(0, 6, size=2)
        image = image.crop((int(left), int(top), int(right), int(bottom))).resize((SIZE, SIZE), Image.BILINEAR)
        image = ImageEnhance.Brightness(image).enhance(float(rng.uniform(0.9, 1.1)))
        if (i // 7) % 2:
            image = image.transpose(Image.FLIP_LEFT_RIGHT)
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=int(rng.integers(88, 96)))
    return buffer.getvalue()


def _write(args: tuple[int, str, str, str, str]) -> str:
    i, source, split, label, root = args
    target = Path(root) / split / label / f"g{i:07d}.jpg"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        data = perturbed(Path(source).read_bytes(), i)
        partial = target.with_suffix(".part")
        partial.write_bytes(data)
        partial.replace(target)
    return hashlib.sha256(target.read_bytes()).hexdigest()


def generate(shared: Path, root: Path, first: int, count: int, workers: int = 2) -> Path:
    """Images `first` … `first + count - 1` under `root` (`<split>/<label>/g<i>.jpg`); existing files are kept."""
    real = sources(shared)
    jobs = [
        (i, str(real[i % len(real)][0]), real[i % len(real)][1], real[i % len(real)][2], str(root))
        for i in range(first, first + count)
    ]
    with mp.get_context("fork").Pool(workers) as pool:
        digests = pool.map(_write, jobs, chunksize=256)
    if len(set(digests)) != len(digests):
        raise RuntimeError("generated images are not all distinct")
    return root
