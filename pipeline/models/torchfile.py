"""Read a PyTorch state dict without torch: legacy (non-zip) `torch.save` files, pickle + numpy.

The legacy layout (PyTorch < 1.6, and `_use_new_zipfile_serialization=False`):
five pickles and the raw storages, one after the other —

1. the magic number 0x1950a86a20f9469cfc6c, 2. the protocol version (1001),
3. system info (endianness, type sizes), 4. the object itself (here an
OrderedDict name → tensor), where each tensor is a `torch._utils._rebuild_tensor_v2`
call on a persistent id ('storage', storage type, key, location, numel),
5. the list of storage keys in file order, then per key an 8-byte little-endian
element count and the raw little-endian values.

Only tensors, OrderedDicts and plain Python values are reconstructed; any other
class in the file is refused (no arbitrary code runs, unlike `torch.load`).
"""
from __future__ import annotations

import collections
import pickle
import struct
import zipfile
from pathlib import Path
from typing import Dict

import numpy as np

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "BFloat16Storage": None, "LongStorage": np.int64, "IntStorage": np.int32,
    "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}


class TorchFileError(ValueError):
    """The file is not a legacy PyTorch state dict this reader understands (names the file)."""


class _Tensor:
    """A tensor reference read from the pickle: storage key, offset, shape, strides (in elements)."""

    def __init__(self, storage, offset, shape, stride, *_ignored):
        self.storage, self.offset, self.shape, self.stride = storage, offset, tuple(shape), tuple(stride)


class _Unpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if module == "torch._utils" and name in ("_rebuild_tensor_v2", "_rebuild_tensor"):
            return _Tensor
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        if module == "torch" and name in STORAGE_DTYPES:
            return name
        raise pickle.UnpicklingError(f"refusing {module}.{name}: only tensors and dicts are read")

    def persistent_load(self, pid):
        kind, storage_type, key, _location, numel = pid[:5]
        if kind != "storage":
            raise pickle.UnpicklingError(f"unknown persistent id {kind!r}")
        return (storage_type, str(key), int(numel))


def _materialize(ref: _Tensor, storages: Dict[str, np.ndarray]) -> np.ndarray:
    """A strided view of the storage copied into a C-contiguous array of ref.shape."""
    _type, key, _numel = ref.storage
    flat = storages[key]
    if not ref.shape:
        return flat[ref.offset].copy()
    itemsize = flat.dtype.itemsize
    view = np.lib.stride_tricks.as_strided(flat[ref.offset:], shape=ref.shape,
                                           strides=[s * itemsize for s in ref.stride], writeable=False)
    return np.ascontiguousarray(view)


def read_state_dict(path) -> Dict[str, np.ndarray]:
    """name → numpy array for every tensor of a legacy `torch.save` state dict at `path`.

    Shapes and dtypes are PyTorch's (convolutions (out, in, kh, kw), BatchNorm
    counters int64). Raises TorchFileError naming the file when it is not one.
    """
    path = Path(path)
    if zipfile.is_zipfile(path):
        raise TorchFileError(f"{path}: a zip-format torch file (PyTorch >= 1.6); only the legacy "
                             "format is read without torch")
    try:
        with open(path, "rb") as f:
            if pickle.load(f) != LEGACY_MAGIC:
                raise TorchFileError(f"{path}: not a PyTorch file (wrong magic number)")
            pickle.load(f)  # protocol version
            info = pickle.load(f)
            if isinstance(info, dict) and not info.get("little_endian", True):
                raise TorchFileError(f"{path}: big-endian torch files are not supported")
            obj = _Unpickler(f, encoding="latin1").load()
            keys = pickle.load(f)
            if not isinstance(obj, dict):
                raise TorchFileError(f"{path}: holds a {type(obj).__name__}, not a state dict")
            types = {ref.storage[1]: ref.storage[0] for ref in obj.values() if isinstance(ref, _Tensor)}
            storages = {}
            for key in keys:
                header = f.read(8)
                if len(header) < 8:
                    raise TorchFileError(f"{path}: truncated at storage {key}")
                (count,) = struct.unpack("<q", header)
                dtype = STORAGE_DTYPES.get(types.get(str(key), "FloatStorage"))
                if dtype is None:
                    raise TorchFileError(f"{path}: storage type {types.get(str(key))} is not supported")
                dtype = np.dtype(dtype).newbyteorder("<")
                raw = f.read(count * dtype.itemsize)
                if len(raw) < count * dtype.itemsize:
                    raise TorchFileError(f"{path}: truncated in storage {key}")
                storages[str(key)] = np.frombuffer(raw, dtype)
    except (pickle.UnpicklingError, EOFError, struct.error, ValueError) as err:
        if isinstance(err, TorchFileError):
            raise
        raise TorchFileError(f"{path}: cannot read as a legacy torch state dict: {err}") from err
    return {name: _materialize(ref, storages) if isinstance(ref, _Tensor) else ref
            for name, ref in obj.items()}
