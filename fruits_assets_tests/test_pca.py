import numpy as np
import pytest

from fruits_assets.spark.pca import choose_k


def test_choose_k_is_smallest_reaching_target():
    explained = [0.5, 0.3, 0.1, 0.05, 0.05]
    assert choose_k(explained, 0.5) == 1
    assert choose_k(explained, 0.8) == 2
    assert choose_k(explained, 0.85) == 3
    assert choose_k(explained, 0.9) == 3
    assert choose_k(explained, 1.0) == 5


def test_choose_k_rejects_a_target_outside_unit_interval():
    with pytest.raises(ValueError, match="variance target"):
        choose_k([1.0], 1.5)


def test_one_fit_gives_the_whole_spectrum_and_the_model_mllib_fits_with_k(spark):
    """The curve used to choose k is numpy's, constant features included; the cut model is MLlib's fit with k."""
    from pyspark.ml.feature import PCA, StandardScaler

    from fruits_assets.spark.moments import moments_of
    from fruits_assets.spark.pca import VECTOR_COL, fit_pca, with_vector

    rng = np.random.default_rng(1)
    data = rng.normal(size=(30, 12)) @ rng.normal(size=(12, 12))
    data[:, [3, 7]] = 0.0  # never active, as many MobileNet channels are on a small image set
    frame = spark.createDataFrame([(row.tolist(),) for row in data.astype(np.float32)], "features array<float>")

    model, spectrum = fit_pca(moments_of(frame, dim=12), 4, 0.9)
    x = data.astype(np.float32).astype(np.float64)
    std = x.std(axis=0, ddof=1)
    z = np.where(std > 0, (x - x.mean(axis=0)) / np.where(std > 0, std, 1.0), 0.0)
    expected = np.linalg.svd(z, compute_uv=False) ** 2
    expected /= expected.sum()
    np.testing.assert_allclose(spectrum, expected, atol=1e-9)
    assert max(spectrum[-2:]) < 1e-12  # the two constant features explain nothing

    vectors = with_vector(frame).select(VECTOR_COL)
    scaled = StandardScaler(inputCol=VECTOR_COL, outputCol="s", withMean=True, withStd=True).fit(vectors)
    direct = PCA(k=4, inputCol="s", outputCol="p").fit(scaled.transform(vectors))
    cut = model.stages[-1]
    assert cut.getK() == 4
    np.testing.assert_allclose(cut.explainedVariance.toArray(), direct.explainedVariance.toArray(), atol=1e-12)
    ours, theirs = cut.pc.toArray(), direct.pc.toArray()
    np.testing.assert_allclose(np.abs(ours), np.abs(theirs), atol=1e-9)  # the same components, up to sign
    np.testing.assert_allclose(ours * np.sign(ours[0] * theirs[0]), theirs, atol=1e-9)


def test_canonical_signs_make_each_largest_loading_positive():
    from fruits_assets.spark.pca import canonical_signs

    components = np.array([[0.1, -0.9, 0.0], [-0.8, 0.2, 0.0], [0.3, 0.1, 0.0]])
    signs = canonical_signs(components)
    assert signs.tolist() == [-1.0, -1.0, 1.0]  # an all-zero column keeps its sign
    oriented = components * signs
    assert (oriented[np.abs(oriented).argmax(axis=0), [0, 1, 2]] >= 0).all()
    np.testing.assert_array_equal(canonical_signs(-components)[:2] * -1, signs[:2])


def test_two_fits_in_different_row_orders_project_identically(spark, tmp_path):
    """PCA's sign ambiguity is fixed: the same data gives the same components, and the model saves and loads."""
    from pyspark.ml import PipelineModel
    from pyspark.ml.functions import vector_to_array

    from fruits_assets.spark.moments import moments_of
    from fruits_assets.spark.pca import Projection, fit_pca, project, with_vector

    rng = np.random.default_rng(2)
    data = (rng.normal(size=(40, 6)) @ rng.normal(size=(6, 6))).astype(np.float32)
    rows = [(f"p{i:02d}", "l", None, row.tolist()) for i, row in enumerate(data)]
    schema = "path string, label string, split string, features array<float>"
    forward = spark.createDataFrame(rows, schema).repartition(3)
    backward = spark.createDataFrame(rows[::-1], schema).repartition(2)
    model_a, _ = fit_pca(moments_of(forward, dim=6), 3, 0.9)
    model_b, _ = fit_pca(moments_of(backward, dim=6), 3, 0.9)
    pcs_a = model_a.stages[-1].pc.toArray()
    np.testing.assert_allclose(pcs_a, model_b.stages[-1].pc.toArray(), atol=1e-9)
    assert (pcs_a[np.abs(pcs_a).argmax(axis=0), range(3)] > 0).all()
    model_a.write().save(str(tmp_path / "model"))
    loaded = PipelineModel.load(str(tmp_path / "model"))
    np.testing.assert_array_equal(loaded.stages[-1].pc.toArray(), pcs_a)
    kept = Projection.from_bytes(Projection.of(loaded).to_bytes())  # the arrays kept beside the model
    a = project(kept, forward).toPandas().sort_values("path")
    b = project(Projection.of(model_b), backward).toPandas().sort_values("path")
    np.testing.assert_allclose(a.filter(like="pc_").to_numpy(), b.filter(like="pc_").to_numpy(), atol=1e-9)
    # The projection is MLlib's own transform, as one matrix product per batch.
    mllib = loaded.transform(with_vector(forward)).select("path", vector_to_array("pca").alias("p")).toPandas()
    expected = np.stack(mllib.sort_values("path")["p"].to_numpy())
    np.testing.assert_allclose(a.filter(like="pc_").to_numpy(), expected, atol=1e-9)


def test_moments_and_projection_from_the_files_the_workers_read_equal_those_of_spark_reading_the_table(spark, tmp_path):
    """The features' moments and their projection, computed from the files the Python workers read themselves, are
    those computed from the rows Spark reads, with the same columns and types; so after compaction into one file."""
    from fruits_assets.spark import delta
    from fruits_assets.spark.moments import moments_of
    from fruits_assets.spark.pca import Projection, fit_pca, project
    from fruits_assets.spark.worker_files import WorkerFiles

    rng = np.random.default_rng(5)
    data = (rng.normal(size=(60, 6)) @ rng.normal(size=(6, 6))).astype(np.float32)
    rows = [(f"p{i:02d}", f"l{i % 3}", "Training", row.tolist()) for i, row in enumerate(data)]
    schema = "path string, label string, split string, features array<float>"
    path = str(tmp_path / "features")
    delta.overwrite(spark, path, spark.createDataFrame(rows, schema).repartition(4), None, {})
    spark.sql(f"OPTIMIZE delta.`{path}`")
    for version in (0, 1):
        files, frame = delta.for_workers(spark, path, version), delta.read(spark, path, version)
        assert isinstance(files, WorkerFiles) and len(files.files) == (4 if version == 0 else 1)
        ours, theirs = moments_of(files, dim=6), moments_of(frame, dim=6)
        assert ours.count == theirs.count == 60
        np.testing.assert_allclose(ours.sums, theirs.sums, atol=1e-9)
        np.testing.assert_allclose(ours.cross, theirs.cross, atol=1e-9)
        projection = Projection.of(fit_pca(theirs, 3, 0.9)[0])
        a, b = project(projection, files), project(projection, frame)
        assert a.schema == b.schema
        np.testing.assert_allclose(
            a.toPandas().sort_values("path").filter(like="pc_").to_numpy(),
            b.toPandas().sort_values("path").filter(like="pc_").to_numpy(),
            atol=1e-12,
        )


def test_moments_updated_by_the_changes_equal_the_moments_of_the_new_table(spark):
    """What a refit after a change reads: the rows added and removed, not the table."""
    from fruits_assets.spark.moments import change_moments, moments_of

    rng = np.random.default_rng(3)
    rows = [(f"p{i}", rng.normal(size=5).astype(np.float32).tolist()) for i in range(30)]
    schema = "path string, features array<float>"
    before = moments_of(spark.createDataFrame(rows[:20], schema), dim=5)
    changes = spark.createDataFrame(
        [(p, f, "insert") for p, f in rows[20:]] + [(p, f, "delete") for p, f in rows[:5]],
        "path string, features array<float>, _change_type string",
    )
    updated = before + change_moments(changes, dim=5)
    after = moments_of(spark.createDataFrame(rows[5:], schema), dim=5)
    assert updated.count == after.count == 25
    np.testing.assert_allclose(updated.sums, after.sums, atol=1e-9)
    np.testing.assert_allclose(updated.cross, after.cross, atol=1e-9)


@pytest.mark.parametrize("partitions", [0, 1, 3, 7, 8, 9, 70])
def test_partial_sums_are_added_on_the_executors_down_to_the_few_the_driver_receives(spark, partitions):
    """The driver never holds more than `DRIVER_SUMS` partial sums (13 MB each for the features' moments),
    whatever the partitions: Spark's treeAggregate would collect its last level's, about the square root of
    them. As few partitions as that are not shuffled for a level of their own."""
    from fruits_assets.spark.moments import DRIVER_SUMS, FAN_IN, added_up, summed_on_executors

    def add(a, b):  # never given None: empty partitions are skipped before it
        return a + b

    numbers = spark.sparkContext.parallelize(range(1, 701), partitions) if partitions else spark.sparkContext.emptyRDD()
    last = added_up(numbers, add)
    expected = partitions
    while expected > DRIVER_SUMS:
        expected = -(-expected // FAN_IN)
    assert last.getNumPartitions() == expected <= DRIVER_SUMS
    held = last.glom().collect()
    assert all(len(part) == 1 for part in held) and sum(part[0] for part in held) == (350 * 701 if partitions else 0)
    assert summed_on_executors(numbers, add) == (350 * 701 if partitions else None)
    assert summed_on_executors(spark.sparkContext.parallelize([5, 7], 3), add) == 12  # a partition with nothing


def test_a_constant_or_single_row_table_explains_nothing_and_still_fits():
    from fruits_assets.spark.moments import Moments
    from fruits_assets.spark.pca import mean_std_and_spectrum

    one = Moments(1, np.array([1.0, 2.0]), np.outer([1.0, 2.0], [1.0, 2.0]))
    mean, std, eigenvalues, _ = mean_std_and_spectrum(one)
    assert mean.tolist() == [1.0, 2.0] and std.tolist() == [0.0, 0.0] and eigenvalues.tolist() == [0.0, 0.0]
    with pytest.raises(ValueError, match="no features to fit PCA on"):
        mean_std_and_spectrum(Moments.zero(2))
