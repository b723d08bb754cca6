"""`fruits identify PHOTO …`: which fruit each photo shows, from the stored phone model, without Spark.

    fruits identify [--storage URI] [--top N] PHOTO [PHOTO ...]

Runs the very flatbuffer the app runs (`phone_model`), on photos decoded as the
pipeline decodes them. One line per photo: its top labels with their probabilities
and the time it took, or `unknown` followed by the nearest labels when the photo is
like none of the fruits the classifier learnt (an answer: the exit code stays 0);
then the total. A photo that is missing or not an image gets a line saying so, and
the command exits 1; storage with no phone model exits 2.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from fruits_assets.settings import storage_from_environment
from fruits_assets.vision.ingest import read_file
from fruits_assets.vision.paths import absolute_location
from fruits_assets.vision.phone import LABELS_FILE, MODEL_FILE, PhoneModel
from fruits_assets.vision.preprocess import decode_resized
from fruits_assets.vision.reasons import ImageRejected
from fruits_assets.vision.storage import current_files

NOT_FOUND = "no such file"
BAD_PHOTO, NO_MODEL = 1, 2  # exit statuses; argparse's own usage errors exit 2 too


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {value}")
    return value


def load(storage: str) -> PhoneModel:
    files = current_files(f"{absolute_location(storage)}/phone_model", (MODEL_FILE, LABELS_FILE))
    if files is None:
        raise FileNotFoundError(
            f"no trained classifier under {storage}: materialize fruit_classifier and phone_model first "
            "(dagster asset materialize -m fruits_assets.definitions --select '*')"
        )
    return PhoneModel.from_files(files[MODEL_FILE], files[LABELS_FILE])


def identify(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="fruits identify", description=__doc__.split("\n\n")[0])
    parser.add_argument("photos", nargs="+", metavar="PHOTO")
    parser.add_argument("--storage", default=None, help="the storage root (default: FRUITS_STORAGE)")
    parser.add_argument("--top", type=positive_int, default=3, help="how many labels to show (default 3)")
    args = parser.parse_args(argv)
    storage = args.storage or storage_from_environment()
    began = time.perf_counter()
    try:
        model = load(storage)
    except Exception as error:  # noqa: BLE001 - a missing model, unreadable storage: one clear line, no trace
        print(f"fruits identify: {error}", file=sys.stderr)
        return NO_MODEL
    loaded = time.perf_counter()
    status = 0
    for photo in args.photos:
        start = time.perf_counter()
        try:
            pixels = decode_resized(read_file(absolute_location(photo)))
        except ImageRejected as rejected:
            print(f"{photo}: {_why(rejected)}", file=sys.stderr)
            status = BAD_PHOTO
            continue
        answer = model.answer(pixels)
        best = np.argsort(answer.probabilities)[::-1][: args.top]
        shown = ", ".join(f"{model.labels[i]} {answer.probabilities[i]:.3f}" for i in best)
        said = f"unknown (nearest: {shown})" if answer.unknown else shown
        print(f"{photo}: {said}  ({1000 * (time.perf_counter() - start):.1f} ms)")
    done = time.perf_counter()
    print(
        f"{len(args.photos)} photos in {done - loaded:.2f} s after the model loaded in {loaded - began:.2f} s "
        f"({done - began:.2f} s in all)"
    )
    return status


def _why(rejected: ImageRejected) -> str:
    if rejected.reason == "unreadable" and "FileNotFoundError" in rejected.message:
        return NOT_FOUND
    return f"not identified: {rejected.reason} ({rejected.message})"


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] != "identify":
        print("usage: fruits identify [--storage URI] [--top N] PHOTO [PHOTO ...]", file=sys.stderr)
        sys.exit(2)
    sys.exit(identify(argv[1:]))
