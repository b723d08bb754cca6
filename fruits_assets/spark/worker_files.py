"""A table version's Parquet files read by the Python workers themselves, for a transform that runs there.

The moments and the projection are Python transforms of the features: read by Spark,
each row's 1280 floats went through the JVM's rows and then its Arrow writer on the
way to the worker. Read by pyarrow in the worker, they arrive as the Arrow buffers
the file holds: the projection job of a +1% rerun at 40,000 images took 1.6 to 1.8 s
against 3.1 s. Files are cut as Spark's reader cuts them (`SPLIT_BYTES`, by row
group), and the parts dealt so that each task reads a similar share of the bytes,
so a table compacted into a few large files is still read by every core. A local file is
read a batch at a time, through a small buffer: whole, each row group's features (Spark
writes groups of up to 128 MB) were held by every worker at once, decoded beside the bytes.
An object store's file is still fetched a column chunk at a time, in coalesced ranges. A version
whose files alone do not hold its rows (deletion vectors, column mapping, partition
columns, a file outside the table) is read by Spark, as `delta.read` does.
"""

from __future__ import annotations

import contextlib
import heapq
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem
from pyspark.sql import DataFrame, SparkSession

BATCH_ROWS = 2048  # rows per Arrow batch read from a file: 10 MB of features, 21 MB once a float64 matrix
READ_BUFFER_BYTES = 2**20  # a local file's column chunk read this much at a time (no speed lost), not whole
SPLIT_BYTES = 128 * 2**20  # the most of a file one task reads, as Spark's reader (maxPartitionBytes; a row group)

ArrowTransform = Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]]
Part = tuple[str, int, int]  # a file's URI, and which part of how many: its row groups part, part + parts, …


@dataclass(frozen=True)
class WorkerFiles:
    """The data files (full URIs) of a table version whose files alone hold its rows, and their sizes in bytes."""

    spark: SparkSession
    files: list[str]
    sizes: list[int]


def dealt(files: list[str], sizes: list[int], tasks: int, split_bytes: int = SPLIT_BYTES) -> list[list[Part]]:
    """The files cut into parts of at most about `split_bytes`, dealt to `tasks` tasks: the largest part first, to
    the task with the fewest bytes so far."""
    parts = []
    for uri, size in zip(files, sizes, strict=True):
        count = max(1, math.ceil(size / split_bytes))
        parts += [(size / count, uri, part, count) for part in range(count)]
    loads = [(0.0, task) for task in range(tasks)]
    shares: list[list[Part]] = [[] for _ in range(tasks)]
    for share, uri, part, count in sorted(parts, key=lambda p: (-p[0], p[1], p[2])):
        load, task = heapq.heappop(loads)
        shares[task].append((uri, part, count))
        heapq.heappush(loads, (load + share, task))
    return shares


def task_count(parallelism: int, sizes: list[int], split_bytes: int = SPLIT_BYTES) -> int:
    """As many tasks as cores (or as `split_bytes` parts of the whole, if more), never more than parts to read."""
    parts = sum(max(1, math.ceil(size / split_bytes)) for size in sizes)
    return max(1, min(parts, max(parallelism, math.ceil(sum(sizes) / split_bytes))))


def file_batches(uri: str, columns: list[str], part: int = 0, parts: int = 1) -> Iterator[pa.RecordBatch]:
    """`columns` of the Parquet file at `uri` (a path or any fsspec URL), its row groups `part`, `part + parts`, …,
    `BATCH_ROWS` rows at a time; a clear error if the file lacks a column."""
    fs, path = fsspec.core.url_to_fs(uri)
    with contextlib.ExitStack() as stack:
        local = isinstance(fs, LocalFileSystem)
        source = path if local else stack.enter_context(fs.open(path, "rb"))
        # Not pre-buffered, a chunk is read as the batches need it. On S3, small reads switching between columns
        # would each fetch s3fs's read-ahead block (50 MB) again: there pyarrow fetches whole chunks at once.
        options = {"buffer_size": READ_BUFFER_BYTES, "pre_buffer": False} if local else {}
        parquet = stack.enter_context(pq.ParquetFile(source, **options))
        missing = sorted(set(columns) - set(parquet.schema_arrow.names))
        if missing:
            raise ValueError(f"{uri} has no column {', '.join(missing)}: not a file of this table's schema")
        groups = list(range(parquet.num_row_groups))[part::parts]
        if groups:
            yield from parquet.iter_batches(batch_size=BATCH_ROWS, row_groups=groups, columns=columns)


def map_in_arrow(
    rows: DataFrame | WorkerFiles, columns: list[str], transform: ArrowTransform, schema: str
) -> DataFrame:
    """`transform` over the `columns` of `rows` in the Python workers: Spark's `mapInArrow` over a DataFrame, or,
    over `WorkerFiles`, a task per share of the files (`dealt`), each reading its parts."""
    if isinstance(rows, DataFrame):
        return rows.select(*columns).mapInArrow(transform, schema)
    shares = dealt(rows.files, rows.sizes, task_count(rows.spark.sparkContext.defaultParallelism, rows.sizes))

    def read_then_transform(ids: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        def batches() -> Iterator[pa.RecordBatch]:
            for batch in ids:
                for task in batch.column(0).to_pylist():
                    for uri, part, parts in shares[task]:
                        yield from file_batches(uri, columns, part, parts)

        yield from transform(batches())

    return rows.spark.range(len(shares), numPartitions=len(shares)).mapInArrow(read_then_transform, schema)
