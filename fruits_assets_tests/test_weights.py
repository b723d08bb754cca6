"""The legacy torch checkpoint reader, on checkpoints the tests write themselves (no torch)."""

import io
import os
import pickle
import struct
import sys
import types
from collections import OrderedDict

import numpy as np
import pytest

from fruits_assets.vision import weights
from fruits_assets.vision.weights import WeightsError, parse_legacy_state_dict, read_checkpoint_bytes


class _Storage:
    def __init__(self, key: str, array: np.ndarray):
        self.key, self.array = key, array


def legacy_checkpoint(tensors: dict[str, np.ndarray], monkeypatch, extra=None) -> bytes:
    """Bytes laid out as torch's legacy `torch.save` writes them."""
    torch = types.ModuleType("torch")
    utils = types.ModuleType("torch._utils")
    storage_types = {}
    for name in ("FloatStorage", "LongStorage"):
        cls = type(name, (), {"__module__": "torch", "__qualname__": name})
        setattr(torch, name, cls)
        storage_types[name] = cls

    def _rebuild_tensor_v2(*args):  # stands in for torch's, only to be pickled by reference
        raise AssertionError

    _rebuild_tensor_v2.__module__ = "torch._utils"
    _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2
    monkeypatch.setitem(sys.modules, "torch", torch)
    monkeypatch.setitem(sys.modules, "torch._utils", utils)

    class Tensor:
        def __init__(self, storage, shape):
            self.storage, self.shape = storage, shape

        def __reduce__(self):
            strides = tuple(int(s) for s in np.array(np.empty(self.shape)).strides) if self.shape else ()
            strides = tuple(s // 8 for s in strides)
            return (_rebuild_tensor_v2, (self.storage, 0, self.shape, strides, False, OrderedDict()))

    class Writer(pickle.Pickler):
        def persistent_id(self, obj):
            if isinstance(obj, _Storage):
                kind = "LongStorage" if obj.array.dtype == np.int64 else "FloatStorage"
                return ("storage", storage_types[kind], obj.key, "cpu", obj.array.size, None)
            return None

    storages = [_Storage(str(i), np.ascontiguousarray(a).ravel()) for i, a in enumerate(tensors.values())]
    state = OrderedDict(
        (name, Tensor(s, tuple(a.shape))) for (name, a), s in zip(tensors.items(), storages, strict=True)
    )
    if extra is not None:
        state["extra"] = extra
    out = io.BytesIO()
    for header in (0x1950A86A20F9469CFC6C, 1001, {"protocol_version": 1001, "little_endian": True}):
        pickle.dump(header, out, protocol=2)
    Writer(out, protocol=2).dump(state)
    pickle.dump([s.key for s in storages], out, protocol=2)
    for s in storages:
        out.write(struct.pack("<q", s.array.size))
        out.write(s.array.astype(s.array.dtype.newbyteorder("<")).tobytes())
    return out.getvalue()


def test_reads_tensors_back_exactly(monkeypatch):
    conv = np.arange(2 * 3 * 3 * 3, dtype=np.float32).reshape(2, 3, 3, 3)
    tensors = {
        "conv.weight": conv,
        "bn.num_batches_tracked": np.array(7, dtype=np.int64),
        "bias": np.ones(4, np.float32),
    }
    state = parse_legacy_state_dict(legacy_checkpoint(tensors, monkeypatch))
    assert list(state) == list(tensors)
    for name, array in tensors.items():
        np.testing.assert_array_equal(state[name], array)
        assert state[name].dtype == array.dtype


def test_refuses_a_checkpoint_naming_other_globals(monkeypatch):
    data = legacy_checkpoint({"w": np.ones(2, np.float32)}, monkeypatch, extra=os.system)
    with pytest.raises(WeightsError, match="not allowed"):
        parse_legacy_state_dict(data)


def test_refuses_truncated_and_foreign_files(monkeypatch):
    data = legacy_checkpoint({"w": np.ones(64, np.float32)}, monkeypatch)
    with pytest.raises(WeightsError, match="truncated"):
        parse_legacy_state_dict(data[:-10])
    with pytest.raises(WeightsError):
        parse_legacy_state_dict(pickle.dumps({"a": 1}))
    with pytest.raises(WeightsError):
        parse_legacy_state_dict(b"PK\x03\x04 a zip-format torch file")


def test_refuses_a_file_whose_hash_differs(tmp_path):
    path = tmp_path / "w.pth"
    path.write_bytes(b"something else")
    with pytest.raises(WeightsError, match="SHA-256"):
        read_checkpoint_bytes(path)


def test_installed_checkpoint_is_torchvision_mobilenet_v2():
    state = weights.load_state_dict()
    assert len(state) == 314
    assert state["features.0.0.weight"].shape == (32, 3, 3, 3)
    assert state["classifier.1.weight"].shape == (1000, 1280)
    assert all(np.isfinite(a).all() for a in state.values())
