"""Delta tables: merged changes, one commit each, none when nothing changed; what a commit did read from the log
by delta-rs (no Spark); every version readable; tables clustered by path and compacted."""

import uuid

import pyarrow.parquet as pq
from deltalake import DeltaTable
from pyspark import StorageLevel
from pyspark.sql import functions as F

from fruits_assets.spark import delta
from fruits_assets.spark.delta import Changes
from fruits_assets.vision.delta_log import preview_markdown, table_state, version_files

from .conftest import table


def _rows(spark, *rows):
    return spark.createDataFrame(list(rows), "path string, v long")


def _merge(spark, path, upserts, deletes):
    return delta.merge(spark, path, Changes(upserts, deletes.select("path")), {})


def test_changes_are_merged_by_path_in_one_commit_and_old_versions_stay_readable(spark, tmp_path):
    path = str(tmp_path / "t")
    first = _merge(spark, path, _rows(spark, ("a", 1), ("b", 2), ("c", 3)), _rows(spark))
    assert first.committed and first.metrics["inserted"] == 3 and first.state.rows == 3
    second = _merge(spark, path, _rows(spark, ("b", 20), ("d", 4)), _rows(spark, ("c", 0)))
    assert (second.metrics["inserted"], second.metrics["updated"], second.metrics["deleted"]) == (1, 1, 1)
    assert second.state.version == first.state.version + 1 and second.state.rows == 3
    assert second.state.table_id == first.state.table_id
    assert second.metrics["bytes_added"] > 0 and second.metrics["data_files_removed"] >= 1
    latest = table(path).sort_values("path")
    assert latest.values.tolist() == [["a", 1], ["b", 20], ["d", 4]]
    before = table(path, version=first.state.version).sort_values("path")
    assert before.values.tolist() == [["a", 1], ["b", 2], ["c", 3]]


def test_each_version_reads_as_deltas_own_reader_reads_it_under_a_root_named_with_glob_characters(spark, tmp_path):
    """`read` takes a version's files from the log: the same rows and schema as Delta's reader, whatever the
    commits did (rows merged into rewritten files, deleted down to no file, the schema replaced)."""
    path = str(tmp_path / "a [b]{c}*" / "t")
    assert delta.read(spark, path) is None
    _merge(spark, path, _rows(spark, ("a", 1), ("b", 2), ("c", 3)), _rows(spark))
    _merge(spark, path, _rows(spark, ("b", 20), ("d", 4)), _rows(spark, ("c", 0)))
    _merge(spark, path, _rows(spark), _rows(spark, ("a", 0), ("b", 0), ("d", 0)))
    replaced = spark.createDataFrame([("e", 5.0, [1.0])], "path string, w double, f array<float>")
    delta.overwrite(spark, path, replaced, None, {})
    versions = range(table_state(path).version + 1)
    assert len(versions) == 4
    for version in versions:
        ours = delta.read(spark, path, version)
        theirs = spark.read.format("delta").option("versionAsOf", version).load(path)
        assert ours.schema == theirs.schema
        assert sorted(map(tuple, ours.collect())) == sorted(map(tuple, theirs.collect()))
    assert [delta.read(spark, path, v).count() for v in versions] == [3, 3, 0, 1]
    assert delta.read(spark, path).collect() == delta.read(spark, path, 3).collect()


def test_versions_their_files_alone_do_not_give_are_read_by_deltas_reader(spark, tmp_path):
    """A version of more files than Spark lists without a job, or one with deletion vectors (rows its files still
    hold), reads as Delta's reader reads it; so does the same version read as its files under a higher threshold."""
    many, n = str(tmp_path / "many"), 16
    rows = spark.range(0, n, 1, n).select(F.col("id").cast("string").alias("path"), F.col("id").alias("v"))
    delta.overwrite(spark, many, rows, None, {})  # a file per partition, a row each
    assert table_state(many).files == n
    threshold = spark.conf.get(delta.LISTING_THRESHOLD)
    try:
        for listed_without_a_job in (n // 2, n):
            spark.conf.set(delta.LISTING_THRESHOLD, str(listed_without_a_job))
            assert sorted(map(tuple, delta.read(spark, many).collect())) == sorted(map(tuple, rows.collect()))
    finally:
        spark.conf.set(delta.LISTING_THRESHOLD, threshold)
    vectors = str(tmp_path / "vectors")
    spark.sql(
        f"CREATE TABLE delta.`{vectors}` (k BIGINT) USING delta TBLPROPERTIES ('delta.enableDeletionVectors' = 'true')"
    )
    spark.range(10).withColumnRenamed("id", "k").coalesce(1).write.format("delta").mode("append").save(vectors)
    spark.sql(f"DELETE FROM delta.`{vectors}` WHERE k < 3")
    assert version_files(vectors, None).files is None
    assert sorted(r.k for r in delta.read(spark, vectors).collect()) == list(range(3, 10))


def test_a_python_transform_reads_each_version_from_its_files_in_the_workers(spark, tmp_path):
    """`for_workers` hands a Python transform a version's files, which the workers read with pyarrow: the rows
    Delta's reader gives at that version, under a root named with glob characters, files merged, emptied and
    replaced; a version with deletion vectors comes as Delta's reader's rows."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from fruits_assets.spark.worker_files import WorkerFiles, map_in_arrow

    def doubled(batches):
        for batch in batches:
            yield pa.RecordBatch.from_arrays([batch.column("path"), pc.multiply(batch.column("v"), 2)], ["path", "w"])

    path = str(tmp_path / "a [b]{c}*" / "t")
    assert delta.for_workers(spark, path, 0) is None
    _merge(spark, path, _rows(spark, ("a", 1), ("b", 2), ("c", 3)), _rows(spark))
    _merge(spark, path, _rows(spark, ("b", 20), ("d", 4)), _rows(spark, ("c", 0)))
    _merge(spark, path, _rows(spark), _rows(spark, ("a", 0), ("b", 0), ("d", 0)))
    _merge(spark, path, _rows(spark, *((str(i), i) for i in range(40))), _rows(spark))
    for version in range(table_state(path).version + 1):
        source = delta.for_workers(spark, path, version)
        listed = version_files(path, version)
        assert isinstance(source, WorkerFiles) and len(source.files) == len(listed.files) == len(source.sizes)
        ours = map_in_arrow(source, ["path", "v"], doubled, "path string, w long").collect()
        theirs = spark.read.format("delta").option("versionAsOf", version).load(path)
        assert sorted(map(tuple, ours)) == sorted((r.path, 2 * r.v) for r in theirs.collect())
    # One column: with a `path` column, Delta 4.0's DELETE with deletion vectors fails (delta-io/delta#5296).
    vectors = str(tmp_path / "vectors")
    spark.sql(
        f"CREATE TABLE delta.`{vectors}` (v BIGINT) USING delta TBLPROPERTIES ('delta.enableDeletionVectors' = 'true')"
    )
    spark.range(10).withColumnRenamed("id", "v").coalesce(1).write.format("delta").mode("append").save(vectors)
    spark.sql(f"DELETE FROM delta.`{vectors}` WHERE v < 3")
    source = delta.for_workers(spark, vectors, 2)
    assert not isinstance(source, WorkerFiles)
    kept = map_in_arrow(source, ["v"], lambda batches: (b for b in batches), "v long").collect()
    assert sorted(r.v for r in kept) == list(range(3, 10))


def test_a_key_upserted_and_deleted_is_upserted_and_nothing_to_change_makes_no_commit(spark, tmp_path):
    path = str(tmp_path / "t")
    _merge(spark, path, _rows(spark, ("a", 1)), _rows(spark))
    both = _merge(spark, path, _rows(spark, ("a", 2)), _rows(spark, ("a", 0)))
    assert both.metrics["updated"] == 1 and table(path).values.tolist() == [["a", 2]]
    nothing = _merge(spark, path, _rows(spark), _rows(spark, ("zz", 0)))
    assert not nothing.committed and nothing.state.version == both.state.version  # a delete of an absent key


def test_a_replacement_records_what_it_was_made_from_in_its_commit_readable_without_spark(spark, tmp_path):
    path = str(tmp_path / "t")
    made = delta.overwrite(spark, path, _rows(spark, ("a", 1)), {"features": {"version": 3}}, {})
    assert made.committed and table_state(path).user_metadata["made_from"] == {"features": {"version": 3}}
    again = delta.overwrite(spark, path, _rows(spark, ("a", 2)), {"features": {"version": 4}}, {})
    assert again.state.version == made.state.version + 1 and table(path).values.tolist() == [["a", 2]]
    assert table_state(path).user_metadata["made_from"] == {"features": {"version": 4}}


def test_rows_persisted_before_a_replacement_are_read_from_the_cache_after_it(spark, tmp_path):
    """A caller persists rows to use them again after writing them (the projection, for its CSV): neither creating
    the table nor replacing it may drop them from the cache, or they would be computed again."""
    path = str(tmp_path / "t")
    fresh = F.udf(lambda: uuid.uuid4().hex, "string").asNondeterministic()  # new values each time it is computed
    for _ in ("created", "replaced"):
        rows = spark.range(3).select(F.col("id").cast("string").alias("path"), fresh().alias("v"))
        rows = rows.persist(StorageLevel.DISK_ONLY)
        delta.overwrite(spark, path, rows, None, {})
        assert rows.storageLevel == StorageLevel.DISK_ONLY
        assert sorted(map(tuple, rows.collect())) == sorted(map(tuple, table(path).values.tolist()))
        rows.unpersist()


def test_change_data_feed_gives_what_a_version_added_and_removed(spark, tmp_path):
    path = str(tmp_path / "t")
    first = _merge(spark, path, _rows(spark, ("a", 1), ("b", 2)), _rows(spark))
    last = _merge(spark, path, _rows(spark, ("c", 3)), _rows(spark, ("a", 0)))
    changes = delta.changes(spark, path, first.state.version, last.state.version).select("path", "_change_type")
    assert sorted(changes.toPandas().values.tolist()) == [["a", "delete"], ["c", "insert"]]


def test_tables_are_clustered_by_path_and_compacted_every_few_versions(spark, tmp_path):
    path = str(tmp_path / "t")
    for i in range(delta.MAINTAIN_EVERY + 1):
        commit = _merge(spark, path, _rows(spark, (f"p{i}", i)), _rows(spark))
    assert "clustering" in (DeltaTable(path).protocol().writer_features or [])
    files_before = commit.state.files
    delta.maintain(spark, path, delta.MAINTAIN_EVERY)
    after = table_state(path)
    assert after.files < files_before and after.rows == commit.state.rows  # compacted, the same rows
    assert sorted(table(path)["path"]) == sorted(f"p{i}" for i in range(delta.MAINTAIN_EVERY + 1))


def test_a_preview_reads_the_first_rows_of_one_file_and_shows_vectors_by_their_size(spark, tmp_path):
    path = str(tmp_path / "previewed")
    rows = spark.createDataFrame([(f"p{i:02d}", [0.5] * 3) for i in range(40)], "path string, v array<float>")
    rows.repartition(4).write.format("delta").save(path)
    preview = preview_markdown(path)
    assert preview.splitlines()[0].split("|")[1].strip() == "path"
    assert preview.count("array[3]") == 5
    rows.limit(0).write.format("delta").mode("overwrite").save(path)
    assert "array[3]" not in preview_markdown(path)
    assert preview_markdown(str(tmp_path / "absent")) == "(no table)"


def test_files_are_written_without_parquet_dictionaries_whatever_the_write(spark, tmp_path):
    """The tables' values are floats and strings snappy packs: no write spends time building dictionaries."""
    path = tmp_path / "t"
    rows = spark.range(200).selectExpr("cast(id % 3 as string) as path", "rand(0) as v")
    delta.overwrite(spark, str(path), rows.coalesce(1), None, {})
    _merge(spark, str(path), _rows(spark, ("x", 1)).selectExpr("path", "cast(v as double) as v"), _rows(spark))
    delta.overwrite(spark, str(path), rows.coalesce(1), None, {})
    files = list(path.glob("*.parquet"))
    encodings = set()
    for file in files:
        metadata = pq.ParquetFile(file).metadata
        for group in range(metadata.num_row_groups):
            for column in range(metadata.num_columns):
                encodings |= set(metadata.row_group(group).column(column).encodings)
    assert len(files) >= 3 and "PLAIN" in encodings
    assert not encodings & {"PLAIN_DICTIONARY", "RLE_DICTIONARY"}, encodings
