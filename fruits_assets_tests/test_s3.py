"""Images and storage on S3: a real S3-compatible server (moto's standalone server) on loopback.

The whole graph is materialized from the shell with `FRUITS_IMAGES` and `FRUITS_STORAGE` on
`s3://`, Spark going through Hadoop's S3A connector and `class_index` written as JSON by boto3,
and the outputs are read back with boto3: once with SSE-S3, once with SSE-KMS under a key
from the same server's KMS API. Keys carry spaces, accents, non-Latin scripts, quotes and deep
nesting; broken files are mixed in.
"""

import io
import json
import os
import socket
import sys
import time
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from .conftest import aws_client, free_port, fruit_jpeg, loopback_aws, materialize_in_shell, start_server, stop_server

BUCKET, REGION = "fruits", "eu-west-3"
IMAGES = {
    "Test/Apple Red 1": (200, 20, 30),
    "Test/Pêche ünd 桃 1": (250, 150, 120),
    'deep/er/Training/Kiwi, "gold"': (120, 100, 40),
}
BROKEN = {"Test/Apple Red 1/empty upload.jpg": (b"", "empty"), "Test/Pêche ünd 桃 1/ü cut.jpg": (None, "truncated")}
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory):
    """moto's standalone S3 server on a free loopback port, for this module only."""
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "server.log"
    server = start_server([str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)], log)
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert server.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
    try:
        yield loopback_aws(endpoint, REGION)
    finally:
        stop_server(server)


@pytest.fixture(scope="module")
def bucket(s3_server):
    """A bucket with images under `images/`, awkward keys and broken objects included."""
    s3 = aws_client("s3", s3_server)
    s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
    for folder, color in IMAGES.items():
        for i in range(3):
            s3.put_object(Bucket=BUCKET, Key=f"images/{folder}/{i} ü.jpg", Body=fruit_jpeg(color, seed=i))
    for key, (body, _) in BROKEN.items():
        s3.put_object(Bucket=BUCKET, Key=f"images/{key}", Body=fruit_jpeg((1, 2, 3))[:900] if body is None else body)
    return s3


def _materialize(s3_server: dict[str, str], home: Path, storage_prefix: str, **settings: str) -> None:
    env = {
        **os.environ,
        **s3_server,
        "FRUITS_IMAGES": f"s3://{BUCKET}/images",
        "FRUITS_STORAGE": f"s3://{BUCKET}/{storage_prefix}",
        "DAGSTER_HOME": str(home),
        **settings,
    }
    materialize_in_shell(env)


@pytest.fixture(scope="module")
def materialized(s3_server, bucket, tmp_path_factory):
    _materialize(s3_server, tmp_path_factory.mktemp("dagster_home"), "out")
    return bucket


@pytest.fixture(scope="module")
def materialized_with_kms(s3_server, bucket, tmp_path_factory):
    """The whole graph again, under `kms-out/`, with a KMS key the server created."""
    key = aws_client("kms", s3_server).create_key(Description="fruits_assets test key")["KeyMetadata"]["Arn"]
    _materialize(s3_server, tmp_path_factory.mktemp("dagster_home"), "kms-out", FRUITS_KMS_KEY_ID=key)
    return bucket, key


def _read(s3, key: str) -> bytes:
    return s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()


def _parquet(s3, prefix: str) -> pd.DataFrame:
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix)["Contents"]]
    parts = [pq.read_table(io.BytesIO(_read(s3, k))).to_pandas() for k in keys if k.endswith(".parquet")]
    return pd.concat(parts, ignore_index=True)


def test_outputs_keep_the_local_layout_under_the_storage_prefix(materialized):
    s3 = materialized
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix="out/")["Contents"]]
    tops = {k.split("/")[1] for k in keys}
    assert tops == {
        "raw_images",
        "labeled_images",
        "rejected_images",
        "mobilenet_features",
        "pca_model",
        "pca_features",
        "pca_features.csv",
        "class_index.json",  # a small Python value, as JSON
    }
    class_index = json.loads(_read(s3, "out/class_index.json"))
    assert class_index == {label: i for i, label in enumerate(sorted(folder.split("/")[-1] for folder in IMAGES))}


def test_every_object_is_written_with_server_side_encryption(materialized):
    s3 = materialized
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix="out/")["Contents"]]
    assert {s3.head_object(Bucket=BUCKET, Key=k).get("ServerSideEncryption") for k in keys} == {"AES256"}


def test_every_object_is_encrypted_with_the_configured_kms_key(materialized_with_kms):
    s3, key = materialized_with_kms
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix="kms-out/")["Contents"]]
    assert "kms-out/pca_features.csv" in keys and "kms-out/class_index.json" in keys
    heads = [s3.head_object(Bucket=BUCKET, Key=k) for k in keys]
    assert {(h.get("ServerSideEncryption"), h.get("SSEKMSKeyId")) for h in heads} == {("aws:kms", key)}


def test_csv_on_s3_round_trips_awkward_keys_and_labels(materialized):
    table = pd.read_csv(io.BytesIO(_read(materialized, "out/pca_features.csv")), keep_default_na=False)
    expected = sorted(f"s3://{BUCKET}/images/{folder}/{i} ü.jpg" for folder in IMAGES for i in range(3))
    assert table["path"].tolist() == expected
    labels = dict(zip(table["path"], table["label"], strict=True))
    assert labels[f's3://{BUCKET}/images/deep/er/Training/Kiwi, "gold"/0 ü.jpg'] == 'Kiwi, "gold"'
    assert set(table["label"]) == {"Apple Red 1", "Pêche ünd 桃 1", 'Kiwi, "gold"'}


def test_broken_objects_are_rejected_and_every_image_is_accounted_for(materialized):
    rejected = _parquet(materialized, "out/rejected_images/")
    assert dict(zip(rejected["path"], rejected["reason"], strict=True)) == {
        f"s3://{BUCKET}/images/{key}": reason for key, (_, reason) in BROKEN.items()
    }
    features = _parquet(materialized, "out/mobilenet_features/")
    raw = _parquet(materialized, "out/raw_images/")
    assert len(raw) == len(features) + len(rejected) == 3 * len(IMAGES) + len(BROKEN)
