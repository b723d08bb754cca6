"""Every asset's output read back without Spark, and the comparison that says two storage roots hold the same.

Tables are read by delta-rs, the models' arrays by numpy, the CSV by pandas, the
phone's model by LiteRT on a few photos: independent readers. "The same" is what a
fresh run promises: the same rows, the same features bit for bit, the same
rejections, the models and the CSV equal within their rounding.
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .conftest import table

TABLE_KEYS = {
    "raw_images": ["path", "size", "modified", "etag", "stamp", "label", "split", "listing_error"],
    "labeled_images": ["path", "label", "split", "content_hash", "stamp", "recipe"],
    "rejected_images": ["path", "label", "split", "reason", "message", "content_hash", "stamp", "recipe"],
    "mobilenet_features": ["path", "label", "split", "content_hash", "featurizer"],
}


@dataclass(frozen=True)
class S3Store:
    """A storage root on S3, read with boto3 and delta-rs (`options`)."""

    client: object
    bucket: str
    prefix: str
    options: dict[str, str]


Store = Path | S3Store


def _bytes(store: Store, name: str) -> bytes | None:
    if isinstance(store, Path):
        return (store / name).read_bytes() if (store / name).exists() else None
    try:
        return store.client.get_object(Bucket=store.bucket, Key=f"{store.prefix}/{name}")["Body"].read()
    except store.client.exceptions.NoSuchKey:
        return None


def _table(store: Store, name: str) -> pd.DataFrame:
    if isinstance(store, Path):
        return table(store / name)
    return table(f"s3://{store.bucket}/{store.prefix}/{name}", store.options)


def _current(store: Store, name: str) -> str | None:
    pointer = _bytes(store, f"{name}/current.json")
    return f"{name}/{json.loads(pointer)['folder']}" if pointer is not None else None


def _npz(data: bytes) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(data)) as saved:
        return {name: saved[name] for name in saved.files}


def snapshot(store: Store, photos: list[Path] | None = None, classification: bool = True) -> dict:
    """What a reader finds under the storage root, each asset in a comparable form (the classifier's and the
    phone's model too, unless `classification` is False)."""
    shot: dict = {}
    for name, columns in TABLE_KEYS.items():
        frame = _table(store, name)
        shot[name] = frame.sort_values("path", ignore_index=True)[columns]
        if name == "mobilenet_features":
            shot["features"] = np.stack(frame.sort_values("path")["features"].to_numpy()).astype(np.float32)
    shot["class_index"] = json.loads(_bytes(store, "class_index.json"))
    pca = _current(store, "pca_model")
    shot["moments"] = _npz(_bytes(store, f"{pca}/moments.npz"))
    shot["fit"] = json.loads(_bytes(store, f"{pca}/fit.json"))
    shot["pca_features"] = _table(store, "pca_features").sort_values("path", ignore_index=True)
    csv = io.BytesIO(_bytes(store, "pca_features.csv"))
    shot["csv"] = pd.read_csv(csv, keep_default_na=False, na_values={"split": [""]})
    classifier = _current(store, "fruit_classifier") if classification else None
    if classifier is not None:
        shot["classifier"] = _npz(_bytes(store, f"{classifier}/parameters.npz"))
        shot["evaluation"] = json.loads(_bytes(store, f"{classifier}/evaluation.json"))
    phone = _current(store, "phone_model") if classification else None
    if phone is not None and photos:
        from fruits_assets.vision.phone import LABELS_FILE, MODEL_FILE, PhoneModel
        from fruits_assets.vision.preprocess import decode_resized

        model = PhoneModel.from_files(_bytes(store, f"{phone}/{MODEL_FILE}"), _bytes(store, f"{phone}/{LABELS_FILE}"))
        shot["phone_labels"] = model.labels
        shot["phone"] = np.stack([model.classify(decode_resized(p.read_bytes())) for p in photos])
    return shot


def assert_same_outputs(got: dict, fresh: dict) -> None:
    """`got` (an incremental run's outputs) equals `fresh` (a fresh run's on the same images), asset by asset."""
    assert set(got) == set(fresh), (sorted(got), sorted(fresh))
    for name in TABLE_KEYS:
        pd.testing.assert_frame_equal(got[name], fresh[name], check_dtype=False, obj=name)
    assert np.array_equal(got["features"], fresh["features"]), "features differ (they must be equal bit for bit)"
    assert got["class_index"] == fresh["class_index"]
    assert int(got["moments"]["count"]) == int(fresh["moments"]["count"])
    np.testing.assert_allclose(got["moments"]["sums"], fresh["moments"]["sums"], rtol=1e-9)
    np.testing.assert_allclose(got["moments"]["cross"], fresh["moments"]["cross"], rtol=1e-9, atol=1e-9)
    assert got["fit"]["k"] == fresh["fit"]["k"] and got["fit"]["rows"] == fresh["fit"]["rows"]
    np.testing.assert_allclose(got["fit"]["spectrum"], fresh["fit"]["spectrum"], atol=1e-9)
    a, b = got["pca_features"], fresh["pca_features"]
    assert list(a.columns) == list(b.columns)
    assert a[["path", "label", "split"]].equals(b[["path", "label", "split"]])
    pcs = [c for c in a.columns if c.startswith("pc_")]
    np.testing.assert_allclose(a[pcs].to_numpy(), b[pcs].to_numpy(), atol=1e-7)
    a, b = got["csv"], fresh["csv"]
    assert list(a.columns) == list(b.columns)
    assert a[["path", "label", "split"]].equals(b[["path", "label", "split"]])
    np.testing.assert_allclose(a[pcs].to_numpy(), b[pcs].to_numpy(), atol=1.01e-6)  # within its 6 decimals
    if "classifier" in fresh:
        _assert_close(got["evaluation"], fresh["evaluation"], "evaluation")
        for array in ("mean", "std", "components", "coefficients", "intercepts"):
            np.testing.assert_allclose(got["classifier"][array], fresh["classifier"][array], atol=1e-5, err_msg=array)
        assert list(got["classifier"]["labels"]) == list(fresh["classifier"]["labels"])
    if "phone" in fresh:
        assert got["phone_labels"] == fresh["phone_labels"]
        np.testing.assert_allclose(got["phone"], fresh["phone"], atol=1e-4)


def _assert_close(got, fresh, where: str) -> None:
    """The same figures: counts, names and structure exactly; floats within 1e-6, the noise that distributed sums
    over differently laid-out tables leave in the regression (its arrays are held to 1e-5 above)."""
    if isinstance(fresh, dict):
        assert isinstance(got, dict) and set(got) == set(fresh), where
        for key in fresh:
            _assert_close(got[key], fresh[key], f"{where}.{key}")
    elif isinstance(fresh, list):
        assert isinstance(got, list) and len(got) == len(fresh), where
        for i, (a, b) in enumerate(zip(got, fresh, strict=True)):
            _assert_close(a, b, f"{where}[{i}]")
    elif isinstance(fresh, float) and not isinstance(fresh, bool):
        assert math.isclose(got, fresh, rel_tol=1e-6, abs_tol=1e-6) or (math.isnan(got) and math.isnan(fresh)), (
            where,
            got,
            fresh,
        )
    else:
        assert got == fresh, (where, got, fresh)
