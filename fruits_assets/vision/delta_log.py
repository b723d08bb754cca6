"""What a Delta table holds, read from its log alone: no JVM, no data file read.

A step decides whether it has work from its inputs' identities (Delta's table id
and version) and the provenance recorded with its outputs; delta-rs (`deltalake`)
reads a table's log in milliseconds, so a run with nothing new starts no Spark.
Row counts come from the log's per-file statistics (`numRecords`), which Delta
writes with every file.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

PREVIEW_BUFFER_BYTES = 1 << 16  # a preview reads its file this much at a time


@dataclass(frozen=True)
class TableState:
    """One version of a Delta table: its identity, its rows, and what its last commit recorded."""

    table_id: str
    version: int
    rows: int
    files: int
    bytes: int
    user_metadata: dict[str, Any]
    operation: str
    operation_metrics: dict[str, int]

    @property
    def identity(self) -> dict[str, Any]:
        """What names this exact content: the table (a re-created table has a new id) and its version."""
        return {"table_id": self.table_id, "version": self.version}


def _table(uri: str, options: Mapping[str, str] | None, version: int | None = None):
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    try:
        return DeltaTable(uri, version=version, storage_options=dict(options or {}))
    except TableNotFoundError:
        return None


def table_state(uri: str, options: Mapping[str, str] | None = None) -> TableState | None:
    """The latest version of the table at `uri` as its log describes it; None if there is no table there."""
    table = _table(uri, options)
    if table is None:
        return None
    files = table.get_add_actions(flatten=True)
    rows = files.column("num_records").to_pylist() if files.num_rows else []
    if any(r is None for r in rows):
        raise ValueError(f"{uri}: a file of version {table.version()} has no row count in its statistics")
    sizes = files.column("size_bytes").to_pylist() if files.num_rows else []
    last = table.history(1)[0]
    recorded = last.get("userMetadata")
    metrics = {name: int(value) for name, value in (last.get("operationMetrics") or {}).items() if _is_int(value)}
    return TableState(
        table_id=table.metadata().id,
        version=table.version(),
        rows=int(sum(rows)),
        files=len(rows),
        bytes=int(sum(sizes)),
        user_metadata=json.loads(recorded) if recorded else {},
        operation=str(last.get("operation", "")),
        operation_metrics=metrics,
    )


@dataclass(frozen=True)
class VersionFiles:
    """One version of a table as a Parquet reader needs it: its schema (Spark's JSON form, as Delta stores it)
    and its data files, relative to the table's root, with their sizes in bytes. `files` and `sizes` are None
    when the files alone do not hold the version's rows: deletion vectors, column mapping, partition columns
    (their values are in the log, not the files), or a file outside the table."""

    version: int
    schema_json: str
    files: list[str] | None
    sizes: list[int] | None


def version_files(uri: str, version: int | None, options: Mapping[str, str] | None = None) -> VersionFiles | None:
    """The data files of `version` (or the latest) of the table at `uri`, from its log; None without a table."""
    table = _table(uri, options, version)
    if table is None:
        return None
    actions = table.get_add_actions(flatten=False)
    files = [unquote(path) for path in actions.column("path").to_pylist()] if actions.num_rows else []
    sizes = [int(size) for size in actions.column("size_bytes").to_pylist()] if actions.num_rows else []
    vectors = "deletionVectors" in (table.protocol().reader_features or [])
    mapped = table.metadata().configuration.get("delta.columnMapping.mode", "none") != "none"
    partitioned = bool(table.metadata().partition_columns)
    outside = any("://" in path or path.startswith("/") for path in files)
    whole = not (vectors or mapped or partitioned or outside)
    return VersionFiles(table.version(), table.schema().to_json(), files if whole else None, sizes if whole else None)


def commit_times(uri: str, options: Mapping[str, str] | None, from_version: int) -> list[float]:
    """When each version from `from_version` on was committed (seconds since the epoch), oldest first."""
    table = _table(uri, options)
    if table is None:
        return []
    versions = [h for h in table.history() if int(h.get("version", -1)) >= from_version]
    return sorted(float(h["timestamp"]) / 1000 for h in versions)


def read_columns(uri: str, columns: list[str], options: Mapping[str, str] | None = None):
    """Some columns of the table's latest version as a pyarrow Table; None if there is no table."""
    table = _table(uri, options)
    return None if table is None else table.to_pyarrow_table(columns=columns)


def preview_markdown(uri: str, options: Mapping[str, str] | None = None, rows: int = 5) -> str:
    """The first rows of the table's first data file as a markdown table (the file found and opened through
    delta-rs, read by pyarrow); vectors and bytes shown by their size, not their values.

    Reads `rows` rows of one file through a small buffer, so a preview costs a few MB whatever the table
    holds: Arrow's dataset scanner reads ahead whole files (about 100 MB of features at 40,000 rows, held
    by the allocator afterwards). Tables here have no partition columns and no deletion vectors, so one
    file's rows are some of the table's live rows.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = _table(uri, options)
    if table is None:
        return "(no table)"
    dataset = table.to_pyarrow_dataset()
    first = next(iter(dataset.get_fragments()), None)
    if first is None:
        return "(no rows)"
    with dataset.filesystem.open_input_file(first.path) as f:
        parquet = pq.ParquetFile(f, buffer_size=PREVIEW_BUFFER_BYTES, pre_buffer=False)
        batch = next(parquet.iter_batches(batch_size=rows, use_threads=False), None)
        head = pa.Table.from_batches([batch] if batch else [], schema=parquet.schema_arrow).to_pandas()
    for column in head.columns:
        if head[column].map(lambda v: isinstance(v, bytes)).any():
            head[column] = head[column].map(lambda v: f"{len(v)} bytes" if v is not None else None)
        elif head[column].map(lambda v: hasattr(v, "__len__") and not isinstance(v, str)).any():
            head[column] = head[column].map(lambda v: f"array[{len(v)}]" if v is not None else None)
    return head.to_markdown(index=False)


def delta_rs_options(location: str, endpoint: str | None, region: str) -> dict[str, str]:
    """delta-rs's storage options for `location`: none locally; on S3 the region, and the endpoint if one is set.

    Credentials come from the AWS SDK's default chain, as for every other client.
    """
    if not location.startswith(("s3://", "s3a://")):
        return {}
    options = {"AWS_REGION": region}
    if endpoint:
        options |= {"AWS_ENDPOINT_URL": endpoint, "AWS_ALLOW_HTTP": str(endpoint.startswith("http://")).lower()}
    return options


def _is_int(value: object) -> bool:
    try:
        int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
    return True
