"""A new or changed file, from its path to its fate: read once, hashed, decoded once, featurized or rejected.

The decode that screens an image is the decode that feeds the model: the pixels a
successful screening produces go to the engine in batches, never decoded again.
Every file ends with an `Outcome`: features, or a reason and a message.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass

import fsspec
import numpy as np

from fruits_assets.vision.engines import FeatureEngine
from fruits_assets.vision.mobilenet import INPUT_SIZE
from fruits_assets.vision.preprocess import decode_resized
from fruits_assets.vision.reasons import ImageRejected, Reason

NO_LABEL = "a file directly under the images root has no label folder"
READ_ATTEMPTS = 5  # with backoff from 0.25 s: about 4 s of retries for one file before it is left for the next run
RETRY_BACKOFF_SECONDS = 0.25
# Failures a retry within the run cannot mend: the file is gone, is a folder, or may not be read.
NOT_RETRIED = (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError)


@dataclass(frozen=True)
class Outcome:
    """What became of one file: its SHA-256 (when it was read), and features or why not."""

    content_hash: str | None = None
    features: np.ndarray | None = None
    reason: Reason | None = None
    message: str | None = None


@dataclass
class IngestTimings:
    """Where the time of a batch goes: reading, decoding and resizing, the model."""

    files: int = 0
    images: int = 0
    read_seconds: float = 0.0
    decode_seconds: float = 0.0
    model_seconds: float = 0.0
    read_retries: int = 0
    read_failures: int = 0


def _read(path: str) -> bytes:
    with fsspec.open(path, "rb") as file:
        return file.read()


def read_file(path: str, timings: IngestTimings | None = None, attempts: int = READ_ATTEMPTS) -> bytes:
    """The file's bytes, or `ImageRejected(unreadable)` with the error once the read cannot succeed.

    A failure outside the file (throttling, a timeout, a reset connection, an I/O
    error) is retried with exponential backoff, `attempts` times in all; a file that
    is gone, a folder or a refusal of access is not retried here. Either way the
    rejection is no verdict on the bytes: `unreadable` files are read again by the
    next run. Running out of memory is not the file's fault: it fails the task,
    which Spark retries.
    """
    last: Exception | None = None
    for attempt in range(attempts):
        try:
            return _read(path)
        except MemoryError:
            raise
        except NOT_RETRIED as error:
            raise ImageRejected(Reason.UNREADABLE, f"{type(error).__name__}: {error}") from error
        except Exception as error:  # noqa: BLE001 - S3's 503 SlowDown, a reset, EIO: all worth another try
            last = error
            if timings is not None:
                timings.read_retries += 1
            if attempt + 1 < attempts:
                time.sleep(RETRY_BACKOFF_SECONDS * 2**attempt)
    if timings is not None:
        timings.read_retries -= 1  # the last attempt was a failure, not a retry
        timings.read_failures += 1
    raise ImageRejected(Reason.UNREADABLE, f"{type(last).__name__} after {attempts} attempts: {last}") from last


def ingest(
    engine: FeatureEngine,
    paths: Sequence[str],
    labels: Sequence[str | None],
    listing_errors: Sequence[str | None],
    batch_size: int,
    max_pixels: int,
    timings: IngestTimings | None = None,
) -> list[Outcome]:
    """The outcome of each file: unreadable, unlabeled, rejected by its decode, or featurized by `engine`."""
    timings = timings if timings is not None else IngestTimings()
    outcomes: list[Outcome] = [Outcome()] * len(paths)
    waiting: list[tuple[int, str, np.ndarray]] = []  # decoded, for the next model call

    def run_model() -> None:
        began = time.perf_counter()
        features = engine.features(np.stack([pixels for _, _, pixels in waiting]))
        timings.model_seconds += time.perf_counter() - began
        timings.images += len(waiting)
        for (i, digest, _), row in zip(waiting, features, strict=True):
            outcomes[i] = Outcome(content_hash=digest, features=row)
        waiting.clear()

    for i, (path, label, error) in enumerate(zip(paths, labels, listing_errors, strict=True)):
        timings.files += 1
        if error is not None:
            outcomes[i] = Outcome(reason=Reason.UNREADABLE, message=error)
            continue
        if label is None:
            outcomes[i] = Outcome(reason=Reason.UNLABELED, message=NO_LABEL)
            continue
        began = time.perf_counter()
        try:
            content = read_file(path, timings)
        except ImageRejected as rejected:
            outcomes[i] = Outcome(reason=rejected.reason, message=rejected.message)
            continue
        digest = hashlib.sha256(content).hexdigest()
        decoding = time.perf_counter()
        timings.read_seconds += decoding - began
        try:
            pixels = decode_resized(content, INPUT_SIZE, max_pixels)
        except ImageRejected as rejected:
            outcomes[i] = Outcome(content_hash=digest, reason=rejected.reason, message=rejected.message)
            continue
        finally:
            timings.decode_seconds += time.perf_counter() - decoding
        waiting.append((i, digest, pixels))
        if len(waiting) == batch_size:
            run_model()
    if waiting:
        run_model()
    return outcomes
