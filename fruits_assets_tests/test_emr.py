"""The EMR deployment end to end, on loopback: a release on S3, the real bootstrap action, the step launcher.

moto's server (in a thread here, on a free loopback port) serves S3, KMS and the EMR API.
`make release`'s folder is staged to S3 and `bootstrap/install-fruits.sh` installs it into a
fresh environment with no package index reachable, as a node in a private subnet would.
The run is `dagster asset materialize --select '*'` with `FRUITS_DEPLOYMENT=emr` and a KMS
key: its step launcher stages each step and this package to S3 and adds a step to the EMR
cluster. A runner plays EMR's part: it runs each step's own `spark-submit` command with the
bootstrapped Python and the cluster's configurations (bootstrap/configurations.json rendered
as create-cluster.sh renders it; on `local[2]` instead of YARN, S3A standing in for EMRFS with
the encryption emrfs-site asks for), copies the step's stderr to the cluster's log URI, and
marks the step COMPLETED or FAILED. The outputs are read back from S3 and compared with a
local run on the same images.
"""

import gzip
import io
import json
import os
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from dagster import AssetKey, DagsterEventType, DagsterInstance, DagsterRunStatus
from moto.core import DEFAULT_ACCOUNT_ID
from moto.emr.models import emr_backends
from moto.server import ThreadedMotoServer
from pyspark.find_spark_home import _find_spark_home

from fruits_assets.definitions import FEATURE_PIPELINE
from fruits_assets.spark.config import jars_config, s3a_config

from .conftest import (
    aws_client,
    free_port,
    fruit_jpeg,
    loopback_aws,
    materialize_command,
    materialize_in_shell,
    s3_options,
    table,
)
from .daemon import DONE, dagster_dev, materialized, runs, status, wait_for, writing_runs

PROJECT = Path(__file__).resolve().parents[1]
RELEASE = PROJECT / "build" / "release"
BUCKET, REGION = "fruits", "eu-west-3"
COLORS = {
    f"{split}/{label}": color
    for split in ("Training", "Test")
    for label, color in (("Apple Red 1", (200, 20, 30)), ("Banana 1", (240, 220, 40)), ("Kiwi 1", (120, 100, 40)))
}
NODE_PREFIX = "/opt/fruits"  # where bootstrap/configurations.json expects the bootstrapped Python
# raw_images, screen_and_featurize (four assets), pca_model, project_features (two), fruit_classifier; the checks
# run inside them; phone_model runs on the orchestrating host, where TensorFlow is
STEPS = 5
IMAGES = 4 * len(COLORS)


def _render_configurations(kms_key: str) -> list[dict]:
    rendered = subprocess.run(
        [sys.executable, str(PROJECT / "bootstrap" / "render_configurations.py"), kms_key],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(rendered.stdout)


class EmrStepRunner(threading.Thread):
    """Plays EMR's part: runs every step the EMR API holds, in order, logs it, and records its final state."""

    def __init__(self, cluster_id: str, env: dict[str, str], work: Path, configurations: list[dict], node: Path):
        super().__init__(daemon=True)
        self.cluster_id, self.env, self.work, self.node = cluster_id, env, work, node
        self.configurations = {c["Classification"]: c for c in configurations}
        self.commands: list[list[str]] = []
        self.stopped = threading.Event()
        self.error: BaseException | None = None

    def _cluster(self):
        # The server files requests by the region it reads from them; find the cluster wherever it is.
        backends = emr_backends[DEFAULT_ACCOUNT_ID]
        return next(b.clusters[self.cluster_id] for b in backends.values() if self.cluster_id in b.clusters)

    def _on_node(self, value: str) -> str:
        return value.replace(NODE_PREFIX, str(self.node))

    def _cluster_conf(self) -> dict[str, str]:
        """spark-defaults as the cluster has them, EMRFS's encryption as S3A's (S3A stands in for EMRFS), and
        the Delta Lake jars EMR puts on the class path when `delta-defaults` enables it."""
        conf = {k: self._on_node(v) for k, v in self.configurations["spark-defaults"]["Properties"].items()}
        emrfs = self.configurations["emrfs-site"]["Properties"]
        assert emrfs["fs.s3.enableServerSideEncryption"] == "true"
        assert self.configurations["delta-defaults"]["Properties"]["delta.enabled"] == "true"
        kms_key = emrfs.get("fs.s3.serverSideEncryption.kms.keyId")
        s3a = s3a_config(self.env["AWS_ENDPOINT_URL"], self.env["AWS_REGION"], kms_key)
        return conf | s3a | jars_config("delta", "s3a")

    def _local_command(self, args: list[str], folder: Path) -> list[str]:
        """The step's command with what only EMR has replaced: YARN, EMRFS, its spark-defaults."""
        s3 = aws_client("s3", self.env)
        command = [str(Path(_find_spark_home()) / "bin" / "spark-submit")]
        events = self.work / "spark-events"  # EMR's own spark-defaults put event logs on HDFS
        events.mkdir(exist_ok=True)
        local = {
            "spark.driver.host": "127.0.0.1",
            "spark.driver.bindAddress": "127.0.0.1",
            "spark.eventLog.dir": f"file:{events}",
        }
        for key, value in (self._cluster_conf() | local).items():
            command += ["--conf", f"{key}={value}"]
        for arg in args[1:]:
            if arg == "yarn":
                arg = "local[2]"
            elif arg.startswith("s3://"):  # EMR's spark-submit reads these through EMRFS
                bucket, _, key = arg.removeprefix("s3://").partition("/")
                local_copy = folder / Path(key).name
                s3.download_file(bucket, key, str(local_copy))
                arg = str(local_copy)
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
        s3 = aws_client("s3", self.env)
        exports = self.configurations["spark-env"]["Configurations"][0]["Properties"]
        env = self.env | {k: self._on_node(v) for k, v in exports.items()}
        while not self.stopped.wait(0.5):
            cluster = self._cluster()
            for step in list(cluster.steps):
                if step.id in done or step.state not in ("PENDING", "RUNNING"):
                    continue
                step.state = "RUNNING"
                folder = self.work / step.id
                folder.mkdir()
                command = self._local_command(step.args, folder)
                self.commands.append(step.args)
                with (folder / "stderr").open("w") as err:
                    finished = subprocess.run(command, env=env, stdout=err, stderr=err, timeout=900)
                # As EMR does: the step's logs under the cluster's log URI, then its final state.
                bucket, _, prefix = cluster.log_uri.removeprefix("s3://").partition("/")
                key = f"{prefix}{self.cluster_id}/steps/{step.id}/stderr.gz"
                s3.put_object(Bucket=bucket, Key=key, Body=gzip.compress((folder / "stderr").read_bytes()))
                step.state = "COMPLETED" if finished.returncode == 0 else "FAILED"
                done.add(step.id)


def _materialize_on_emr(
    run_env: dict[str, str], runner: EmrStepRunner, log: Path, select: str = "*", config: dict | None = None
) -> int:
    command = materialize_command(select) + (["--config-json", json.dumps(config)] if config else [])
    with log.open("w") as out:
        run = subprocess.Popen(command, env=run_env, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 1500
    while run.poll() is None:
        if runner.error is not None or time.monotonic() > deadline:
            run.kill()
        time.sleep(1)
    assert runner.error is None, repr(runner.error)
    return run.returncode


@pytest.fixture(scope="module")
def aws():
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FRUITS_")}
        yield env | loopback_aws(f"http://127.0.0.1:{port}", REGION)
    finally:
        server.stop()


@pytest.fixture(scope="module")
def node(aws, tmp_path_factory):
    """The release staged to S3, then installed by the real bootstrap action, no package index reachable."""
    if not (RELEASE / "SHA256SUMS").is_file():
        message = f"{RELEASE} is absent: `make setup` builds it (make release)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    s3 = aws_client("s3", aws)
    s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
    release_uri = f"s3://{BUCKET}/releases/test"
    stage = [sys.executable, str(PROJECT / "bootstrap" / "release.py"), str(RELEASE), "--upload", release_uri]
    subprocess.run([*stage, "--no-build"], env=aws, check=True)
    prefix = tmp_path_factory.mktemp("node") / "opt-fruits"
    offline = {
        "FRUITS_PREFIX": str(prefix),
        "FRUITS_PYTHON": sys.executable,
        "FRUITS_SKIP_OS_PACKAGES": "1",
        "FRUITS_SUDO": "",
        "PIP_INDEX_URL": "http://127.0.0.1:9/simple",  # nothing listens there: any index request would fail
        "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",  # the AWS CLI, as EMR nodes have it
    }
    began = time.monotonic()
    install = subprocess.run(
        ["bash", str(PROJECT / "bootstrap" / "install-fruits.sh"), release_uri],
        env=aws | offline,
        capture_output=True,
        text=True,
        timeout=900,
    )
    seconds = time.monotonic() - began
    assert install.returncode == 0, install.stdout[-3000:] + install.stderr[-3000:]
    staged = sum(o["Size"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix="releases/test/")["Contents"])
    figures = {"staged_mb": staged / 1e6, "install_seconds": seconds}
    print(f"bootstrap: {figures['staged_mb']:.0f} MB staged, installed in {seconds:.0f} s")
    (PROJECT / "build" / "bootstrap-figures.json").write_text(json.dumps(figures, indent=1))
    return prefix, figures


@pytest.fixture(scope="module")
def emr_run(aws, node, tmp_path_factory):
    prefix, _ = node
    work = tmp_path_factory.mktemp("emr")
    s3, kms = aws_client("s3", aws), aws_client("kms", aws)
    key = kms.create_key(Description="fruits_assets EMR test key")["KeyMetadata"]["Arn"]
    for folder, color in COLORS.items():
        for i in range(4):
            s3.put_object(Bucket=BUCKET, Key=f"images/{folder}/{i}.jpg", Body=fruit_jpeg(color, seed=i))
    s3.put_object(Bucket=BUCKET, Key="images/Test/Banana 1/broken.jpg", Body=b"not a photo")
    emr = aws_client("emr", aws)
    cluster_id = emr.run_job_flow(
        Name="fruits-assets",
        ReleaseLabel="emr-spark-8.0.0",
        LogUri=f"s3://{BUCKET}/emr-logs/",
        Instances={
            "MasterInstanceType": "m5.xlarge",
            "SlaveInstanceType": "m5.xlarge",
            "InstanceCount": 3,
            "KeepJobFlowAliveWhenNoSteps": True,
        },
        JobFlowRole="fruits-emr-nodes",
        ServiceRole="fruits-emr-service",
    )["JobFlowId"]
    runner = EmrStepRunner(cluster_id, aws, work, _render_configurations(key), prefix)
    runner.start()
    home = work / "dagster_home"
    home.mkdir()
    run_env = aws | {
        "FRUITS_DEPLOYMENT": "emr",
        "FRUITS_EMR_CLUSTER_ID": cluster_id,
        "FRUITS_EMR_STAGING": f"s3://{BUCKET}/staging",
        "FRUITS_EMR_POLL_SECONDS": "1",
        "FRUITS_IMAGES": f"s3://{BUCKET}/images",
        "FRUITS_STORAGE": f"s3://{BUCKET}/out",
        "FRUITS_KMS_KEY_ID": key,
        "DAGSTER_HOME": str(home),
    }
    code = _materialize_on_emr(run_env, runner, work / "materialize.log")
    steps = {p.name: (p / "stderr").read_text()[-3000:] for p in work.iterdir() if (p / "stderr").exists()}
    assert code == 0, (work / "materialize.log").read_text()[-4000:] + str(steps)
    full_run_steps = emr.list_steps(ClusterId=cluster_id)["Steps"]

    # Nothing new: every step decides so on the host, from the tables' logs; no EMR step is added.
    again_home = work / "again_home"
    again_home.mkdir()
    again = _materialize_on_emr(run_env | {"DAGSTER_HOME": str(again_home)}, runner, work / "again.log")
    assert again == 0, (work / "again.log").read_text()[-4000:]
    steps_after_nothing = len(emr.list_steps(ClusterId=cluster_id)["Steps"])

    failed_home = work / "failed_home"
    failed_home.mkdir()
    # A step that fails on the cluster: the nodes have LiteRT, not TensorFlow, and this run asks for the TensorFlow
    # engine, whose features every photo lacks. On a copy of `out/`, so that `out/` stays the first run's.
    _copy_storage(s3, "out", "failed-out")
    failed_env = run_env | {"FRUITS_STORAGE": f"s3://{BUCKET}/failed-out", "DAGSTER_HOME": str(failed_home)}
    engine = {"ops": {"screen_and_featurize": {"config": {"engine": "tensorflow"}}}}
    failed = _materialize_on_emr(failed_env, runner, work / "failed.log", "group:images or group:features", engine)

    local_home = work / "local_home"
    local_home.mkdir()
    local_env = aws | {
        "FRUITS_IMAGES": f"s3://{BUCKET}/images",
        "FRUITS_STORAGE": f"s3://{BUCKET}/local-out",
        "DAGSTER_HOME": str(local_home),
    }
    materialize_in_shell(local_env, FEATURE_PIPELINE)  # what the comparison reads: the features, the CSV
    yield {
        "s3": s3,
        "aws": aws,
        "run_env": run_env,
        "work": work,
        "steps": full_run_steps,
        "runner": runner,
        "instance": DagsterInstance.from_config(str(home)),
        "key": key,
        "failed": (failed, DagsterInstance.from_config(str(failed_home))),
        "steps_after_nothing": steps_after_nothing,
    }
    runner.stopped.set()
    runner.join(timeout=60)


@pytest.fixture(scope="module")
def sensor_runs(emr_run) -> dict:
    """The daemon (`dg dev`) with the EMR deployment, on a storage root of its own holding what the first run left
    (its objects copied): the first tick's run lists the images in full and finds nothing new, adding no step; ticks
    with nothing new add no run; an upload's notification then starts a run whose Spark steps go to the cluster."""
    aws, run_env, work = emr_run["aws"], emr_run["run_env"], emr_run["work"]
    s3, sqs, emr = aws_client("s3", aws), aws_client("sqs", aws), aws_client("emr", aws)
    _copy_storage(s3, "out", "sensor-out")
    queue = sqs.create_queue(QueueName="fruits-photos")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    rule = {"QueueArn": arn, "Events": ["s3:ObjectCreated:*"]}
    rule["Filter"] = {"Key": {"FilterRules": [{"Name": "prefix", "Value": "images/"}]}}
    s3.put_bucket_notification_configuration(Bucket=BUCKET, NotificationConfiguration={"QueueConfigurations": [rule]})
    env = run_env | {
        "FRUITS_STORAGE": f"s3://{BUCKET}/sensor-out",
        "FRUITS_IMAGES_QUEUE": queue,
        "FRUITS_SENSOR_SECONDS": "2",
        "FRUITS_AUTOMATION_SECONDS": "3600",
    }
    cluster = run_env["FRUITS_EMR_CLUSTER_ID"]

    def step_ids() -> set[str]:
        return {step["Id"] for step in emr.list_steps(ClusterId=cluster)["Steps"]}

    before_daemon = step_ids()
    with dagster_dev(work / "daemon_home", env, work / "dg_dev.log") as (_, instance):
        full = wait_for("the first tick's listing", lambda: runs(instance, **{"fruits/reason": "reconcile"}), 120)[0]
        wait_for("it done", lambda: status(instance, full) in DONE, timeout=900, every=1)
        time.sleep(10)  # five ticks with nothing new
        idle = step_ids()
        quiet_runs = len(writing_runs(instance))
        s3.put_object(Bucket=BUCKET, Key="images/Test/Kiwi 1/new.jpg", Body=fruit_jpeg((120, 100, 40), seed=77))
        notified = wait_for("the upload's run", lambda: runs(instance, **{"fruits/reason": "notifications"}), 120)[0]
        wait_for("it done", lambda: status(instance, notified) in DONE, timeout=900, every=1)
        steps = {step["Id"]: step for step in emr.list_steps(ClusterId=cluster)["Steps"]}
        return {
            "full": status(instance, full),
            "idle_added": idle - before_daemon,
            "quiet_runs": quiet_runs,
            "notified": status(instance, notified),
            "notified_steps": [steps[i] for i in set(steps) - idle],
            "files_read": materialized(instance, notified, "labeled_images")["files_read"],
        }


def _copy_storage(s3, source: str, target: str) -> None:
    """A storage root's every object copied under another prefix, as `aws s3 sync` would."""
    for key in _keys(s3, f"{source}/"):
        s3.copy_object(
            Bucket=BUCKET, Key=f"{target}/{key.removeprefix(source + '/')}", CopySource={"Bucket": BUCKET, "Key": key}
        )


def _keys(s3, prefix: str) -> list[str]:
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return [o["Key"] for page in pages for o in page.get("Contents", [])]


def _table(aws: dict[str, str], prefix: str):
    return table(f"s3://{BUCKET}/{prefix}", s3_options(aws))


def test_every_asset_and_check_ran_as_its_own_emr_step(emr_run):
    steps, runner = emr_run["steps"], emr_run["runner"]
    completed = [s for s in steps if s["Status"]["State"] == "COMPLETED"]
    assert len(completed) == STEPS, [(s["Name"], s["Status"]["State"]) for s in steps]
    for args in runner.commands:
        assert args[:5] == ["/usr/lib/spark/bin/spark-submit", "--master", "yarn", "--deploy-mode", "client"]
        assert "--py-files" in args and args[-3].endswith("emr_step.py")
    [run] = [r for r in emr_run["instance"].get_runs()]
    checks = emr_run["instance"].all_logs(run.run_id, of_type=DagsterEventType.ASSET_CHECK_EVALUATION)
    assert len(checks) == 11 and all(c.dagster_event.event_specific_data.passed for c in checks)
    for asset in ("raw_images", "labeled_images", "rejected_images", "class_index", "mobilenet_features"):
        assert emr_run["instance"].get_latest_materialization_event(AssetKey(asset)) is not None
    for asset in ("pca_model", "pca_features", "pca_features_csv", "fruit_classifier", "phone_model"):
        assert emr_run["instance"].get_latest_materialization_event(AssetKey(asset)) is not None


def test_steps_ran_on_the_bootstrapped_environment_which_has_neither_tensorflow_nor_pyspark(emr_run, node):
    prefix, figures = node
    python = prefix / "bin" / "python"
    for package in ("tensorflow", "pyspark"):
        found = subprocess.run([str(python), "-c", f"import {package}"], capture_output=True)
        assert found.returncode != 0  # on the cluster, pyspark comes from EMR's Spark, on spark-submit's path
    assert figures["staged_mb"] > 10 and figures["install_seconds"] > 0
    assert emr_run["runner"].commands  # every step above ran with that Python (spark-defaults on the node)


def test_the_outputs_on_s3_match_a_local_run_on_the_same_images(emr_run, aws):
    s3 = emr_run["s3"]
    on_emr, local = _table(aws, "out/mobilenet_features"), _table(aws, "local-out/mobilenet_features")
    assert sorted(on_emr["path"]) == sorted(local["path"]) and len(on_emr) == IMAGES
    emr_features = dict(zip(on_emr["path"], on_emr["features"], strict=True))
    assert max(np.abs(emr_features[p] - f).max() for p, f in zip(local["path"], local["features"], strict=True)) <= 1e-3
    csv = s3.get_object(Bucket=BUCKET, Key="out/pca_features.csv")["Body"].read()
    assert csv == s3.get_object(Bucket=BUCKET, Key="local-out/pca_features.csv")["Body"].read()
    assert csv.count(b"\n") == IMAGES + 1
    rejected = _table(aws, "out/rejected_images")
    assert rejected["reason"].tolist() == ["not_an_image"]
    class_index = json.loads(s3.get_object(Bucket=BUCKET, Key="out/class_index.json")["Body"].read())
    assert class_index == {"Apple Red 1": 0, "Banana 1": 1, "Kiwi 1": 2}


def test_every_object_the_run_wrote_is_encrypted_with_the_kms_key(emr_run):
    s3, key = emr_run["s3"], emr_run["key"]
    written = _keys(s3, "out/") + _keys(s3, "staging/")
    assert any(k.endswith("events.pkl") for k in written) and any(k.endswith("pca_features.csv") for k in written)
    encryption = {
        k: (h.get("ServerSideEncryption"), h.get("SSEKMSKeyId"))
        for k in written
        if (h := s3.head_object(Bucket=BUCKET, Key=k))
    }
    assert {v for v in encryption.values()} == {("aws:kms", key)}, {k: v for k, v in encryption.items() if v[1] != key}


def test_only_this_package_was_staged_as_the_steps_code(emr_run):
    s3 = emr_run["s3"]
    code = next(k for k in _keys(s3, "staging/") if k.endswith("code.zip"))
    with zipfile.ZipFile(io.BytesIO(s3.get_object(Bucket=BUCKET, Key=code)["Body"].read())) as archive:
        files = archive.namelist()
    assert "fruits_assets/definitions.py" in files
    assert all(f.startswith("fruits_assets/") and f.endswith(".py") for f in files)


def test_a_failed_step_fails_the_run_with_its_own_error_and_its_stderr(emr_run):
    code, instance = emr_run["failed"]
    assert code != 0
    [run] = instance.get_runs()
    messages = [record.user_message or "" for record in instance.all_logs(run.run_id)]
    failure = next(e for e in instance.all_logs(run.run_id, of_type=DagsterEventType.STEP_FAILURE))
    assert failure.step_key == "screen_and_featurize"
    assert "ModuleNotFoundError" in str(failure.dagster_event.step_failure_data.error)  # no TensorFlow on the nodes
    # A module missing on the nodes fails every attempt: the step is not retried, one EMR step, one stderr tail.
    assert not list(instance.all_logs(run.run_id, of_type=DagsterEventType.STEP_UP_FOR_RETRY))
    [tail] = [m for m in messages if "the last lines of its stderr" in m]
    assert "/steps/" in tail and "ModuleNotFoundError" in tail  # the step's own stderr, from the cluster's log URI


def test_with_nothing_new_every_step_decides_on_the_host_and_no_emr_step_is_added(emr_run, sensor_runs):
    assert emr_run["steps_after_nothing"] == len(emr_run["steps"])  # `dagster asset materialize` again: no step
    # The first tick's full listing found nothing new: its run added no step; the ticks after it, no run.
    assert sensor_runs["full"] == DagsterRunStatus.SUCCESS
    assert not sensor_runs["idle_added"] and sensor_runs["quiet_runs"] == 1


def test_a_sensor_run_for_an_upload_sends_its_spark_steps_through_the_launcher(sensor_runs):
    assert sensor_runs["notified"] == DagsterRunStatus.SUCCESS and sensor_runs["files_read"] == 1
    added = sensor_runs["notified_steps"]
    assert sorted(s["Name"] for s in added) == ["Execute Solid/Op raw_images", "Execute Solid/Op screen_and_featurize"]
    assert all(s["Status"]["State"] == "COMPLETED" for s in added)
