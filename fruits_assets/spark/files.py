"""Single-file outputs written through Hadoop's FileSystem, so they work on any Spark storage."""

from __future__ import annotations

import uuid

from pyspark.sql import DataFrame, SparkSession


def _hadoop_fs(spark: SparkSession, path: str):
    jvm = spark.sparkContext._jvm
    hpath = jvm.org.apache.hadoop.fs.Path(path)
    conf = spark.sparkContext._jsc.hadoopConfiguration()
    return hpath.getFileSystem(conf), hpath


def write_single_csv(spark: SparkSession, rows: DataFrame, dest: str) -> None:
    """Write `rows` as one RFC 4180 CSV file at `dest`, with a header, in the DataFrame's order.

    Spark writes a folder of part files; the one part is then moved to `dest`.
    Quotes are doubled (not backslash-escaped) and white space is kept, so
    `pandas.read_csv` reads back exactly what was written.
    """
    staging = f"{dest}.staging-{uuid.uuid4().hex}"
    (
        rows.coalesce(1)
        .write.option("header", "true")
        .option("quote", '"')
        .option("escape", '"')
        .option("ignoreLeadingWhiteSpace", "false")
        .option("ignoreTrailingWhiteSpace", "false")
        .csv(staging)
    )
    fs, staging_path = _hadoop_fs(spark, staging)
    parts = [s.getPath() for s in fs.listStatus(staging_path) if s.getPath().getName().startswith("part-")]
    if len(parts) != 1:
        raise RuntimeError(f"expected one CSV part under {staging}, found {len(parts)}")
    _, dest_path = _hadoop_fs(spark, dest)
    fs.delete(dest_path, False)
    if not fs.rename(parts[0], dest_path):
        raise RuntimeError(f"could not move {parts[0]} to {dest}")
    fs.delete(staging_path, True)


def path_exists(spark: SparkSession, path: str) -> bool:
    fs, hpath = _hadoop_fs(spark, path)
    return bool(fs.exists(hpath))
