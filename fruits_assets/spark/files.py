"""Outputs written through Hadoop's FileSystem, so they work on any Spark storage, and replaced atomically.

Every output is written beside its destination under a staging name, then
swapped in by renames: a run killed while writing leaves the previous output
intact. On a file system (local, HDFS) a rename is atomic, so a reader sees the
previous output or the new one, never half of one; on S3 a file is one object
(atomic too) but renaming a dataset copies it object by object. Leftovers of a
killed run are cleared (or, if the kill fell between the two renames, the
previous output restored) by the next write or read. One run at a time writes
a given storage root.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

from pyspark.sql import DataFrame, SparkSession

STAGING, RETIRED = ".staging-", ".retired-"


def _hadoop_fs(spark: SparkSession, path: str):
    jvm = spark.sparkContext._jvm
    hpath = jvm.org.apache.hadoop.fs.Path(path)
    conf = spark.sparkContext._jsc.hadoopConfiguration()
    return hpath.getFileSystem(conf), hpath


def path_exists(spark: SparkSession, path: str) -> bool:
    fs, hpath = _hadoop_fs(spark, path)
    return bool(fs.exists(hpath))


def recover_interrupted(spark: SparkSession, dest: str) -> None:
    """Clear what a killed write left beside `dest`; restore the previous output if `dest` went missing."""
    fs, dest_path = _hadoop_fs(spark, dest)
    parent = dest_path.getParent()
    if not fs.exists(parent):
        return
    name = dest_path.getName()
    statuses = sorted(fs.listStatus(parent), key=lambda s: s.getModificationTime())
    siblings = [s.getPath() for s in statuses]
    retired = [p for p in siblings if p.getName().startswith(name + RETIRED)]
    if retired and not fs.exists(dest_path):
        fs.rename(retired.pop(), dest_path)
    for leftover in retired + [p for p in siblings if p.getName().startswith(name + STAGING)]:
        fs.delete(leftover, True)


def replace_atomically(spark: SparkSession, dest: str, write: Callable[[str], None]) -> None:
    """Call `write(staging)` for a path beside `dest`, then swap the result in as `dest`."""
    recover_interrupted(spark, dest)
    token = uuid.uuid4().hex
    staging = f"{dest}{STAGING}{token}"
    write(staging)
    fs, dest_path = _hadoop_fs(spark, dest)
    _, staging_path = _hadoop_fs(spark, staging)
    _, retired_path = _hadoop_fs(spark, f"{dest}{RETIRED}{token}")
    had_previous = bool(fs.exists(dest_path))
    if had_previous and not fs.rename(dest_path, retired_path):
        raise RuntimeError(f"could not move the previous {dest} aside")
    if not fs.rename(staging_path, dest_path):
        raise RuntimeError(f"could not move {staging} to {dest}")
    if had_previous:
        fs.delete(retired_path, True)


def write_parquet(spark: SparkSession, rows: DataFrame, dest: str) -> None:
    """`rows` as a Parquet dataset at `dest`, replacing any previous one atomically."""
    replace_atomically(spark, dest, lambda staging: rows.write.parquet(staging))


def write_single_csv(spark: SparkSession, rows: DataFrame, dest: str) -> None:
    """Write `rows` as one RFC 4180 CSV file at `dest`, with a header, in the DataFrame's order.

    Spark writes a folder of part files; the one part is then swapped in as `dest`.
    Quotes are doubled (not backslash-escaped) and white space is kept, so
    `pandas.read_csv` reads back exactly what was written.
    """

    def write(staging: str) -> None:
        folder = f"{staging}.parts"
        (
            rows.coalesce(1)
            .write.option("header", "true")
            .option("quote", '"')
            .option("escape", '"')
            .option("ignoreLeadingWhiteSpace", "false")
            .option("ignoreTrailingWhiteSpace", "false")
            .csv(folder)
        )
        fs, folder_path = _hadoop_fs(spark, folder)
        parts = [s.getPath() for s in fs.listStatus(folder_path) if s.getPath().getName().startswith("part-")]
        if len(parts) != 1:
            raise RuntimeError(f"expected one CSV part under {folder}, found {len(parts)}")
        _, staging_path = _hadoop_fs(spark, staging)
        # A local file system's checksum would follow the part and sit beside the CSV as `.name.crc`.
        fs.delete(parts[0].getParent().suffix(f"/.{parts[0].getName()}.crc"), False)
        if not fs.rename(parts[0], staging_path):
            raise RuntimeError(f"could not move {parts[0]} to {staging}")
        fs.delete(folder_path, True)

    replace_atomically(spark, dest, write)
