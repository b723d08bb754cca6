"""Which task reads which part of which file when the Python workers read a table's files themselves."""

import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fruits_assets.spark.worker_files import dealt, file_batches, task_count

MB = 2**20


def test_a_large_file_is_cut_into_parts_and_every_task_reads_a_similar_share():
    """A table compacted into one large file beside small ones is still read by every task: the large file is cut
    into parts (its row groups dealt out), and the largest parts go first to the task with the fewest bytes."""
    files, sizes = ["big", "a", "b", "c"], [4 * 64 * MB, 16 * MB, 16 * MB, 32 * MB]
    shares = dealt(files, sizes, tasks=3, split_bytes=64 * MB)
    parts = sorted(part for share in shares for part in share)
    assert parts == sorted([("big", j, 4) for j in range(4)] + [("a", 0, 1), ("b", 0, 1), ("c", 0, 1)])
    loads = [sum(sizes[files.index(uri)] / count for uri, _, count in share) for share in shares]
    assert sum(loads) == sum(sizes) and max(loads) - min(loads) <= 64 * MB
    assert dealt(files, sizes, tasks=3, split_bytes=64 * MB) == shares  # the same files, the same deal


@pytest.mark.parametrize(
    ("cores", "sizes", "tasks"),
    [(2, [5 * MB] * 40, 2), (2, [1024 * MB], 8), (16, [5 * MB], 1), (2, [], 1), (4, [5 * MB] * 3, 3)],
)
def test_as_many_tasks_as_cores_or_parts_of_the_whole_never_more_than_parts(cores, sizes, tasks):
    assert task_count(cores, sizes, split_bytes=128 * MB) == tasks


def test_the_parts_of_a_file_are_its_row_groups_dealt_out_and_a_missing_column_is_named(tmp_path):
    path = str(tmp_path / "part-0.parquet")
    rows = pa.table({"path": [f"p{i}" for i in range(100)], "features": [[float(i), 0.5] for i in range(100)]})
    pq.write_table(rows, path, row_group_size=10)
    read = [[b.to_pylist() for b in file_batches(path, ["features", "path"], part, 3)] for part in range(3)]
    got = [row["path"] for part in read for batch in part for row in batch]
    assert sorted(got) == sorted(rows.column("path").to_pylist()) and len(got) == 100
    assert [len([row for batch in part for row in batch]) for part in read] == [40, 30, 30]
    assert list(read[0][0][0]) == ["features", "path"]
    with pytest.raises(ValueError, match="has no column label"):
        list(file_batches(path, ["path", "label"]))


def test_a_local_file_is_read_a_batch_at_a_time_not_a_row_group_at_a_time(tmp_path):
    """Spark writes row groups of up to 128 MB, and each core's worker reads one at a time: what a worker holds
    must be about a batch of features, not a whole group (measured in a fresh interpreter: Arrow's peak)."""
    path = tmp_path / "part-0.parquet"
    rows = 25_000  # 1280 floats each: one row group of 122 MB
    values = pa.array(np.random.default_rng(0).random(rows * 1280, dtype=np.float32))
    features = pa.ListArray.from_arrays(pa.array(np.arange(0, rows * 1280 + 1, 1280, dtype=np.int32)), values)
    pq.write_table(pa.table({"features": features}), path, row_group_size=rows, use_dictionary=False)
    metadata = pq.read_metadata(path)
    group = metadata.row_group(0).total_byte_size
    assert metadata.num_row_groups == 1 and group > 120 * MB
    read = (
        "import pyarrow as pa\n"
        "from fruits_assets.spark.worker_files import file_batches\n"
        f"rows = sum(len(batch) for batch in file_batches({str(path)!r}, ['features']))\n"
        "print(rows, pa.default_memory_pool().max_memory())\n"
    )
    out = subprocess.run([sys.executable, "-c", read], capture_output=True, text=True, check=True).stdout.split()
    assert int(out[0]) == rows
    assert int(out[1]) < group / 2, f"Arrow held {int(out[1]) / MB:.0f} MB to read a {group / MB:.0f} MB row group"
