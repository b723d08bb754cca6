"""One CSV file from a table, written by parallel tasks and joined once, judged before it replaces the last one.

Spark's tasks write the rows as CSV parts (no header) in a staging folder beside the
destination, in the table's order (the parts of an ordered DataFrame are ordered
ranges). What the write produced (rows, values that are not finite) is observed as
it goes; only if the caller's check accepts it are the parts joined once, header
first, into the destination: on a file system into a file beside it then renamed
over it, on S3 as one multipart upload completed onto the key (atomic, like any
PUT). A rejected or interrupted write leaves the previous file in place, and its
staging folder is removed by the next write.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import fsspec
from fsspec.implementations.local import LocalFileSystem
from pyspark.sql import DataFrame, Observation
from pyspark.sql import functions as F

STAGING = ".staging-"
BLOCK = 8 * 2**20  # bytes per read of a part, and per uploaded part on S3 (S3's least is 5 MiB)


@dataclass(frozen=True)
class Produced:
    """What a CSV write produced, observed while the parts were written."""

    columns: list[str]
    rows: int
    not_finite: int


def _fs(uri: str):
    return fsspec.core.url_to_fs(uri)


def clear_staging(dest: str) -> None:
    """Remove what an interrupted write left beside `dest`."""
    fs, path = _fs(dest)
    parent, name = path.rsplit("/", 1)
    if not fs.exists(parent):
        return
    fs.invalidate_cache(parent)
    for entry in fs.ls(parent, detail=False):
        if entry.rstrip("/").rsplit("/", 1)[-1].startswith(name + STAGING):
            fs.rm(entry, recursive=True)


def _parts(folder: str) -> list[str]:
    fs, path = _fs(folder)
    fs.invalidate_cache(path)
    return sorted(p for p in fs.ls(path, detail=False) if p.rsplit("/", 1)[-1].startswith("part-"))


def _blocks(header: bytes, parts: list[str], fs) -> Iterator[bytes]:
    yield header
    for part in parts:
        with fs.open(part, "rb") as file:
            while block := file.read(BLOCK):
                yield block


def _join(dest: str, blocks: Iterator[bytes], encryption: dict[str, str]) -> int:
    """Write `blocks` as the file `dest`, replacing it in one step; its size."""
    fs, path = _fs(dest)
    size = 0
    if isinstance(fs, LocalFileSystem):
        folder = os.path.dirname(path)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=f".{os.path.basename(path)}.", delete=False) as file:
            for block in blocks:
                file.write(block)
                size += len(block)
        os.chmod(file.name, 0o644)
        os.replace(file.name, path)
        return size
    with fs.open(path, "wb", block_size=BLOCK, **encryption) as file:  # one multipart upload, completed at close
        for block in blocks:
            file.write(block)
            size += len(block)
    return size


def write_csv(
    rows: DataFrame,
    dest: str,
    accept: Callable[[Produced], bool],
    before_replacing: Callable[[], None],
    encryption: dict[str, str],
) -> tuple[Produced, int | None]:
    """`rows` as one RFC 4180 CSV at `dest` (header first, in the DataFrame's order), if `accept` approves what
    the write produced. Returns that, and the file's size (None when it was refused and `dest` left as it was).

    Quotes are doubled (not backslash-escaped) and white space is kept, so
    `pandas.read_csv` reads back exactly what was written.
    """
    clear_staging(dest)
    folder = f"{dest}{STAGING}{uuid.uuid4().hex}"
    numbers = [c for c, kind in rows.dtypes if kind in ("double", "float")]
    bad = [F.count_if(F.isnan(c) | (F.abs(F.col(c)) == float("inf"))) for c in numbers]
    observed = Observation("csv")
    measured = rows.observe(
        observed, F.count(F.lit(1)).alias("rows"), (sum(bad[1:], bad[0]) if bad else F.lit(0)).alias("not_finite")
    )
    (
        measured.write.option("header", "false")
        .option("quote", '"')
        .option("escape", '"')
        .option("ignoreLeadingWhiteSpace", "false")
        .option("ignoreTrailingWhiteSpace", "false")
        .csv(folder)
    )
    produced = Produced(rows.columns, int(observed.get["rows"]), int(observed.get["not_finite"]))
    fs, _ = _fs(folder)
    try:
        if not accept(produced):
            return produced, None
        header = (",".join(_quoted(c) for c in rows.columns) + "\n").encode()
        before_replacing()
        return produced, _join(dest, _blocks(header, _parts(folder), fs), encryption)
    finally:
        fs.rm(_fs(folder)[1], recursive=True)


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"' if any(ch in name for ch in ',"\n\r') else name
