"""The EMR deployment end to end, on loopback: dagster-aws's step launcher, an EMR API, S3, spark-submit.

moto's server (run in a thread here, on a free loopback port) serves S3 and the EMR API. The
run is `dagster asset materialize` with `FRUITS_DEPLOYMENT=emr`: its step launcher stages each
step and this package to S3 and adds a step to the EMR cluster. A runner plays EMR's part: it
takes each step the API holds, runs its command with `spark-submit` as EMR would (on `local[2]`
instead of YARN, with S3A standing in for EMRFS and the cluster's configuration applied), and
marks the step COMPLETED or FAILED. The launcher reads the step's events back from S3.
"""

import io
import json
import os
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from dagster import AssetKey, DagsterEventType, DagsterInstance
from moto.core import DEFAULT_ACCOUNT_ID
from moto.emr.models import emr_backends
from moto.server import ThreadedMotoServer
from pyspark.find_spark_home import _find_spark_home

from fruits_assets.spark.config import s3a_config

from .conftest import aws_client, free_port, fruit_jpeg, loopback_aws, materialize_command

BUCKET, REGION = "fruits", "eu-west-3"
COLORS = {"Test/Apple Red 1": (200, 20, 30), "Test/Banana 1": (240, 220, 40)}


class EmrStepRunner(threading.Thread):
    """Plays EMR's part: runs every step the EMR API holds, in order, and records its final state."""

    def __init__(self, cluster_id: str, env: dict[str, str], work: Path):
        super().__init__(daemon=True)
        self.cluster_id, self.env, self.work = cluster_id, env, work
        self.commands: list[list[str]] = []
        self.stopped = threading.Event()
        self.error: BaseException | None = None

    def _cluster(self):
        # The server files requests by the region it reads from them; find the cluster wherever it is.
        backends = emr_backends[DEFAULT_ACCOUNT_ID]
        return next(b.clusters[self.cluster_id] for b in backends.values() if self.cluster_id in b.clusters)

    def _local_command(self, args: list[str], folder: Path) -> list[str]:
        """The step's command with what only EMR has replaced: YARN, EMRFS, its spark-defaults."""
        s3 = aws_client("s3", self.env)
        command = [str(Path(_find_spark_home()) / "bin" / "spark-submit")]
        emulated = s3a_config(self.env["AWS_ENDPOINT_URL"], self.env["AWS_REGION"]) | {
            "spark.pyspark.python": sys.executable,  # the bootstrap's /opt/fruits/bin/python
            "spark.pyspark.driver.python": sys.executable,
            "spark.driver.host": "127.0.0.1",
            "spark.driver.bindAddress": "127.0.0.1",
        }
        for key, value in emulated.items():
            command += ["--conf", f"{key}={value}"]
        for arg in args[1:]:
            if arg == "yarn":
                arg = "local[2]"
            elif arg.startswith("s3://"):  # EMR's spark-submit reads these through EMRFS
                bucket, _, key = arg.removeprefix("s3://").partition("/")
                local = folder / Path(key).name
                s3.download_file(bucket, key, str(local))
                arg = str(local)
            command.append(arg)
        return command

    def run(self) -> None:
        try:
            self._run_steps()
        except BaseException as error:  # surfaced by the test: a dead runner must not look like a slow EMR
            self.error = error
            raise

    def _run_steps(self) -> None:
        done: set[str] = set()
        while not self.stopped.wait(0.5):
            for step in list(self._cluster().steps):
                if step.id in done or step.state not in ("PENDING", "RUNNING"):
                    continue
                step.state = "RUNNING"
                folder = self.work / step.id
                folder.mkdir()
                command = self._local_command(step.args, folder)
                self.commands.append(step.args)
                # FRUITS_DEPLOYMENT=emr is what the cluster's spark-env (bootstrap/configurations.json) exports.
                env = {**self.env, "FRUITS_DEPLOYMENT": "emr"}
                with (folder / "stderr").open("w") as err:
                    finished = subprocess.run(command, env=env, stdout=err, stderr=err, timeout=900)
                step.state = "COMPLETED" if finished.returncode == 0 else "FAILED"
                done.add(step.id)


@pytest.fixture(scope="module")
def emr_run(tmp_path_factory):
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    work = tmp_path_factory.mktemp("emr")
    aws = loopback_aws(f"http://127.0.0.1:{port}", REGION)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRUITS_")} | aws
    s3 = aws_client("s3", env)
    s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
    for folder, color in COLORS.items():
        for i in range(3):
            s3.put_object(Bucket=BUCKET, Key=f"images/{folder}/{i}.jpg", Body=fruit_jpeg(color, seed=i))
    emr = aws_client("emr", env)
    cluster_id = emr.run_job_flow(
        Name="fruits-assets",
        ReleaseLabel="emr-spark-8.0.0",
        Instances={
            "MasterInstanceType": "m5.xlarge",
            "SlaveInstanceType": "m5.xlarge",
            "InstanceCount": 3,
            "KeepJobFlowAliveWhenNoSteps": True,
        },
        JobFlowRole="EMR_EC2_DefaultRole",
        ServiceRole="EMR_DefaultRole",
    )["JobFlowId"]
    runner = EmrStepRunner(cluster_id, env, work)
    runner.start()
    home = work / "dagster_home"
    home.mkdir()
    run_env = env | {
        "FRUITS_DEPLOYMENT": "emr",
        "FRUITS_EMR_CLUSTER_ID": cluster_id,
        "FRUITS_EMR_STAGING": f"s3://{BUCKET}/staging",
        "FRUITS_IMAGES": f"s3://{BUCKET}/images",
        "FRUITS_STORAGE": f"s3://{BUCKET}/out",
        "DAGSTER_HOME": str(home),
    }
    log = work / "materialize.log"
    # raw_images and screen_images: Spark outputs to Parquet and a small Python value (class_index) to S3.
    selection = "raw_images,labeled_images,rejected_images,class_index"
    command = materialize_command(selection)
    with log.open("w") as out:
        run = subprocess.Popen(command, env=run_env, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 900
    while run.poll() is None:
        if runner.error is not None or time.monotonic() > deadline:
            run.kill()
        time.sleep(1)
    runner.stopped.set()
    runner.join(timeout=60)
    assert runner.error is None, repr(runner.error)
    steps = {p.name: (p / "stderr").read_text()[-3000:] for p in work.iterdir() if (p / "stderr").exists()}
    assert run.returncode == 0, log.read_text()[-4000:] + str(steps)
    yield s3, emr, cluster_id, runner, DagsterInstance.from_config(str(home))
    server.stop()


def test_each_spark_step_ran_as_an_emr_step_submitted_with_spark_submit(emr_run):
    _, emr, cluster_id, runner, _ = emr_run
    steps = emr.list_steps(ClusterId=cluster_id)["Steps"]
    assert len(steps) == 4  # raw_images, screen_images and a check of each
    assert {s["Status"]["State"] for s in steps} == {"COMPLETED"}
    for args in runner.commands:
        assert args[:5] == ["/usr/lib/spark/bin/spark-submit", "--master", "yarn", "--deploy-mode", "client"]
        assert "--py-files" in args and args[-3].endswith("emr_step.py")


def test_the_step_and_only_this_package_were_staged_to_s3(emr_run):
    s3, *_ = emr_run
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix="staging/")["Contents"]]
    names = {k.rsplit("/", 1)[1] for k in keys}
    assert {"code.zip", "emr_step.py", "step_run_ref.pkl", "fruits_settings.json", "events.pkl"} <= names
    code = next(k for k in keys if k.endswith("code.zip"))
    with zipfile.ZipFile(io.BytesIO(s3.get_object(Bucket=BUCKET, Key=code)["Body"].read())) as archive:
        files = archive.namelist()
    assert "fruits_assets/definitions.py" in files
    assert all(f.startswith("fruits_assets/") and f.endswith(".py") for f in files)
    staged = [
        k
        for k in keys
        if k.rsplit("/", 1)[1] in {"code.zip", "emr_step.py", "step_run_ref.pkl", "fruits_settings.json"}
    ]
    assert {s3.head_object(Bucket=BUCKET, Key=k).get("ServerSideEncryption") for k in staged} == {"AES256"}


def test_the_events_came_back_and_the_asset_is_materialized_on_s3(emr_run):
    s3, _, _, _, instance = emr_run
    event = instance.get_latest_materialization_event(AssetKey("raw_images"))
    metadata = event.asset_materialization.metadata
    assert metadata["path"].value == f"s3://{BUCKET}/out/raw_images" and metadata["rows"].value == 6
    [run] = instance.get_runs()
    checks = instance.all_logs(run.run_id, of_type=DagsterEventType.ASSET_CHECK_EVALUATION)
    assert len(checks) == 2 and all(c.dagster_event.event_specific_data.passed for c in checks)
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix="out/raw_images/")["Contents"]]
    parts = [
        pq.read_table(io.BytesIO(s3.get_object(Bucket=BUCKET, Key=k)["Body"].read()))
        for k in keys
        if k.endswith(".parquet")
    ]
    assert sum(p.num_rows for p in parts) == 6


def test_a_small_python_value_came_back_from_the_step_as_json_on_s3(emr_run):
    s3, _, _, _, instance = emr_run
    event = instance.get_latest_materialization_event(AssetKey("class_index"))
    assert event.asset_materialization.metadata["classes"].value == 2
    stored = s3.get_object(Bucket=BUCKET, Key="out/class_index.json")
    assert json.loads(stored["Body"].read()) == {"Apple Red 1": 0, "Banana 1": 1}
    assert stored["ServerSideEncryption"] == "AES256"
