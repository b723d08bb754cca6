"""The port against torchvision's own outputs on real Fruits-360 images (../shared)."""

import numpy as np

from fruits_assets.vision.engines import build_engine, engine_payload
from fruits_assets.vision.ingest import ingest
from fruits_assets.vision.mobilenet import mobilenet_v2_from_torch
from fruits_assets.vision.preprocess import decode_resized
from fruits_assets.vision.weights import load_state_dict

from .conftest import shared_path

STRAWBERRY = 949


def test_full_model_calls_strawberries_strawberry():
    folder = shared_path("fruits-360", "Test", "Strawberry 1")
    files = sorted(folder.glob("*.jpg"))
    model = mobilenet_v2_from_torch(load_state_dict(), include_top=True)
    batch = np.stack([decode_resized(f.read_bytes()) for f in files]).astype(np.float32)
    top1 = model.predict(batch, batch_size=64, verbose=0).argmax(axis=1)
    assert len(files) == 164
    # The reference says torchvision calls all 164 strawberries strawberry: the port must too.
    assert (top1 == STRAWBERRY).all(), f"{int((top1 != STRAWBERRY).sum())} of 164 are not class {STRAWBERRY}"


def test_tensorflow_engine_matches_torchvision_reference():
    """The alternative engine, outside Spark (the default engine is checked end to end)."""
    reference = np.load(shared_path("reference", "mobilenet_v2_torchvision_Test.npz"))
    root = shared_path("fruits-360", "Test")
    paths = list(reference["paths"][::7])
    engine = build_engine("tensorflow", engine_payload("tensorflow"), threads=2)
    outcomes = ingest(engine, [str(root / p) for p in paths], ["label"] * len(paths), [None] * len(paths), 32, 10**8)
    features = np.stack([o.features for o in outcomes])
    assert np.abs(features - reference["features"][::7]).max() <= 1e-3
