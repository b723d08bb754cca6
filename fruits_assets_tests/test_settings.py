"""Settings: read once from the environment, each checked, a bad one named before any work starts."""

import os
import subprocess

import pytest

from fruits_assets.settings import DEFAULT_REGION, DEFAULT_STORAGE, Settings, SettingsError

from .conftest import materialize_command

EMR = {
    "FRUITS_DEPLOYMENT": "emr",
    "FRUITS_IMAGES": "s3://photos/fruits",
    "FRUITS_STORAGE": "s3://features/run",
    "FRUITS_EMR_CLUSTER_ID": "j-ABC",
    "FRUITS_EMR_STAGING": "s3://artifacts/staging",
}


def test_defaults_from_an_environment_naming_only_the_images():
    settings = Settings.from_environment({"FRUITS_IMAGES": "/data/fruits"})
    assert (settings.images, settings.storage, settings.deployment) == ("/data/fruits", DEFAULT_STORAGE, "local")
    assert settings.aws_region == DEFAULT_REGION and settings.kms_key_id is None
    assert not settings.inside_spark_submit and not settings.needs_s3


def test_the_step_environment_restores_the_settings_on_the_cluster():
    settings = Settings.from_environment(EMR | {"FRUITS_KMS_KEY_ID": "key-1", "PYSPARK_GATEWAY_PORT": "4242"})
    assert settings.inside_spark_submit and settings.staging == ("artifacts", "staging")
    restored = Settings.from_environment(settings.step_environment() | {"FRUITS_EMR_CLUSTER_ID": "j-ABC"} | EMR)
    assert (restored.images, restored.storage, restored.kms_key_id) == (settings.images, settings.storage, "key-1")


@pytest.mark.parametrize(
    ("environment", "named", "says"),
    [
        ({}, "FRUITS_IMAGES", "is not set"),
        ({"FRUITS_IMAGES": ""}, "FRUITS_IMAGES", "is not set (or empty)"),
        ({"FRUITS_IMAGES": "/d", "FRUITS_DEPLOYMENT": "locale"}, "FRUITS_DEPLOYMENT", "expected one of local, cluster"),
        ({"FRUITS_IMAGES": "/d", "FRUITS_DEPLOYMENT": "cluster"}, "FRUITS_SPARK_MASTER", "is required"),
        ({"FRUITS_IMAGES": "/d", "FRUITS_STORAGE": "/d/out"}, "FRUITS_STORAGE", "inside the images root"),
        ({"FRUITS_IMAGES": "/d/a::b"}, "FRUITS_IMAGES", "'::' chains file systems"),
        ({"FRUITS_IMAGES": "/d", "FRUITS_STORAGE": "s3://b/x::y"}, "FRUITS_STORAGE", "'::' chains file systems"),
        ({"FRUITS_IMAGES": "s3://b/p", "FRUITS_STORAGE": "s3a://b/p/x"}, "FRUITS_STORAGE", "inside the images root"),
        ({**EMR, "FRUITS_EMR_CLUSTER_ID": ""}, "FRUITS_EMR_CLUSTER_ID", "is required"),
        ({**EMR, "FRUITS_EMR_STAGING": "/tmp/staging"}, "FRUITS_EMR_STAGING", "must be s3://bucket/prefix"),
        ({**EMR, "FRUITS_EMR_STAGING": "s3://"}, "FRUITS_EMR_STAGING", "must be s3://bucket/prefix"),
        ({**EMR, "FRUITS_STORAGE": "/data/out"}, "FRUITS_STORAGE", "must be on S3"),
    ],
)
def test_a_bad_setting_is_named_with_what_it_accepts(environment, named, says):
    with pytest.raises(SettingsError, match=named) as raised:
        Settings.from_environment(environment)
    assert says in str(raised.value)


def test_storage_beside_the_images_is_fine():
    assert Settings.from_environment({"FRUITS_IMAGES": "/data/fruits", "FRUITS_STORAGE": "/data/fruits-out"})
    assert Settings.from_environment({"FRUITS_IMAGES": "s3://b/photos", "FRUITS_STORAGE": "/b/photos/out"})


def test_a_region_outside_the_eu_is_a_warning_on_emr():
    with pytest.warns(UserWarning, match="AWS_REGION=us-east-1 is outside the EU"):
        Settings.from_environment(EMR | {"AWS_REGION": "us-east-1"})


def test_dagster_reports_a_bad_setting_before_any_work(tmp_path):
    env = {**os.environ, "FRUITS_IMAGES": str(tmp_path), "FRUITS_DEPLOYMENT": "clutser", "DAGSTER_HOME": str(tmp_path)}
    run = subprocess.run(materialize_command(), env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode != 0
    assert "FRUITS_DEPLOYMENT is 'clutser'; expected one of local, cluster, emr" in run.stderr + run.stdout
    assert "STEP_START" not in run.stderr + run.stdout


def test_inside_a_step_on_the_cluster_only_the_data_settings_are_needed():
    step = {k: v for k, v in EMR.items() if not k.startswith("FRUITS_EMR_")} | {"PYSPARK_GATEWAY_PORT": "4242"}
    assert Settings.from_environment(step).inside_spark_submit


@pytest.mark.parametrize("value", ["soon", "0", "-3"])
def test_the_emr_poll_interval_is_a_number_of_seconds(value):
    with pytest.raises(SettingsError, match=f"FRUITS_EMR_POLL_SECONDS is '?{value}'?"):
        Settings.from_environment(EMR | {"FRUITS_EMR_POLL_SECONDS": value})


def test_a_spark_driver_stays_warm_locally_not_on_a_cluster_unless_set():
    local = {"FRUITS_IMAGES": "/d"}
    cluster = local | {"FRUITS_DEPLOYMENT": "cluster", "FRUITS_SPARK_MASTER": "spark://host:7077"}
    assert Settings.from_environment(local).keep_warm_seconds == 600
    assert Settings.from_environment(cluster).keep_warm_seconds == 0  # a warm driver would hold the executors
    assert Settings.from_environment(cluster | {"FRUITS_SPARK_KEEP_WARM_SECONDS": "120"}).keep_warm_seconds == 120
    assert Settings.from_environment(local | {"FRUITS_SPARK_KEEP_WARM_SECONDS": "0"}).keep_warm_seconds == 0


@pytest.mark.parametrize("value", ["long", "-1"])
def test_the_time_a_driver_stays_warm_is_a_number_of_seconds(value):
    with pytest.raises(SettingsError, match=f"FRUITS_SPARK_KEEP_WARM_SECONDS is '?{value}'?"):
        Settings.from_environment({"FRUITS_IMAGES": "/d", "FRUITS_SPARK_KEEP_WARM_SECONDS": value})
