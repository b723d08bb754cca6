"""A run's op config is checked whole before the first step: a typo fails before any Spark work."""

import pytest
from dagster import DagsterEventType, DagsterInvalidConfigError

from fruits_assets.assets.config import OP_CONFIGS, check_run_config
from fruits_assets.vision.engines import ENGINES

from .conftest import run_graph, write_tree


@pytest.mark.parametrize(
    ("op", "config", "named"),
    [
        ("pca_model", {"k": 5000}, "ops.pca_model.config.k"),
        ("pca_model", {"k": 0}, "ops.pca_model.config.k"),
        ("pca_model", {"variance_target": 1.5}, "ops.pca_model.config.variance_target"),
        ("pca_model", {"variance_target": 0}, "ops.pca_model.config.variance_target"),
        ("screen_and_featurize", {"batch_size": 0}, "ops.screen_and_featurize.config.batch_size"),
        ("screen_and_featurize", {"arrow_batch_size": -1}, "ops.screen_and_featurize.config.arrow_batch_size"),
        ("screen_and_featurize", {"engine": "onnx"}, "ops.screen_and_featurize.config.engine"),
        ("screen_and_featurize", {"max_pixels": 0}, "ops.screen_and_featurize.config.max_pixels"),
        ("fruit_classifier", {"accuracy_floor": 1.2}, "ops.fruit_classifier.config.accuracy_floor"),
        ("fruit_classifier", {"holdout_share": 1}, "ops.fruit_classifier.config.holdout_share"),
        ("fruit_classifier", {"reg_param": -1}, "ops.fruit_classifier.config.reg_param"),
        ("mobilenet_features", {"engine": "litert"}, "ops.mobilenet_features: no op of that name takes config"),
    ],
)
def test_each_bad_value_is_named_with_its_path(op, config, named):
    with pytest.raises(ValueError, match="invalid run config") as raised:
        check_run_config({"ops": {op: {"config": config}}})
    assert named in str(raised.value)


def test_good_and_default_config_passes():
    check_run_config({})
    check_run_config({"ops": {"pca_model": {"config": {"k": 1280}}, "screen_and_featurize": {"config": {}}}})
    assert set(OP_CONFIGS) == {"raw_images", "screen_and_featurize", "pca_model", "fruit_classifier"}


def test_an_engine_typo_is_refused_at_launch_naming_the_engines(tmp_path):
    write_tree(tmp_path / "images", {"Test/Kiwi 1": 1}, {"Kiwi 1": (120, 100, 40)})
    with pytest.raises(DagsterInvalidConfigError, match="engine") as raised:
        run_graph(
            tmp_path / "images", tmp_path / "storage", {"ops": {"screen_and_featurize": {"config": {"engine": "x"}}}}
        )
    assert all(engine in str(raised.value) for engine in ENGINES)


def test_k_out_of_range_fails_the_run_before_its_first_step(tmp_path):
    write_tree(tmp_path / "images", {"Test/Kiwi 1": 1}, {"Kiwi 1": (120, 100, 40)})
    result = run_graph(
        tmp_path / "images", tmp_path / "storage", {"ops": {"pca_model": {"config": {"k": 5000}}}}, raise_on_error=False
    )
    assert not result.success
    assert not [e for e in result.all_events if e.event_type == DagsterEventType.STEP_START]
    failure = next(e for e in result.all_events if e.event_type == DagsterEventType.RUN_FAILURE)
    cause = failure.event_specific_data.error.cause.message
    assert "ops.pca_model.config.k: Input should be less than or equal to 1280 (got 5000)" in cause
    assert not (tmp_path / "storage").exists()  # nothing was listed, read or written
