"""Image-level labels in the `cls_labels.npy` format of the weakly supervised literature (IRN, AffinityNet).

The file is `np.save` of a dict {id-without-underscore (int) -> float32[C] multi-hot}, i.e. a .npy whose
payload is a pickle. It is read with a restricted unpickler that can only rebuild numpy arrays, numpy
scalars and plain containers: a pickle that names any other callable is refused before anything runs.
"""

from __future__ import annotations

import _codecs
import _compat_pickle
import builtins
import io
import os
import pickle
import re
from pathlib import Path
from typing import Any

import numpy as np
from numpy._core import multiarray as _multiarray

from weakseg.errors import DataError
from weakseg.io import atomic_write_bytes

ClsKey = int | str

# numpy 1.x pickles name numpy.core.*, numpy 2.x numpy._core.*; both resolve to the same objects.
_ALLOWED: dict[tuple[str, str], Any] = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("numpy.core.multiarray", "_reconstruct"): _multiarray._reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _multiarray._reconstruct,
    ("numpy.core.multiarray", "scalar"): _multiarray.scalar,
    ("numpy._core.multiarray", "scalar"): _multiarray.scalar,
    **{
        ("builtins", name): getattr(builtins, name)
        for name in ("dict", "list", "tuple", "set", "frozenset", "int", "float", "complex", "bool", "str", "bytes")
    },
}


def _text_encode(text: str, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    """Stand-in for _codecs.encode, which protocol-2 pickles use to carry bytes; only text codecs."""
    if not isinstance(text, str) or encoding.lower().replace("-", "") not in ("latin1", "utf8", "ascii"):
        raise pickle.UnpicklingError(f"refused _codecs.encode({type(text).__name__}, {encoding!r})")
    return _codecs.encode(text, encoding, errors)


def _dtype_global(module: str, name: str) -> Any:
    """numpy 2 pickles some dtypes as numpy.dtypes.<Name>DType classes: admit only those."""
    if module == "numpy.dtypes" and name.endswith("DType"):
        import numpy.dtypes

        cls = getattr(numpy.dtypes, name, None)
        if isinstance(cls, type) and issubclass(cls, np.dtype):
            return cls
    return None


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only numpy array/scalar/dtype rebuilders and plain builtin types."""

    def find_class(self, module: str, name: str) -> Any:
        """Return an allowed global; refuse everything else."""
        if module in _compat_pickle.IMPORT_MAPPING or (module, name) in _compat_pickle.NAME_MAPPING:
            # Python 2 names (protocol < 3), mapped as pickle's own find_class does; still allow-listed below
            module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
            module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        if (module, name) == ("_codecs", "encode"):
            return _text_encode
        found = _dtype_global(module, name)
        if found is not None:
            return found
        raise pickle.UnpicklingError(f"refused global {module}.{name}")

    def persistent_load(self, pid: Any) -> Any:
        """Persistent ids are never legitimate here."""
        raise pickle.UnpicklingError("refused persistent id")


def restricted_loads(data: bytes, source: str = "<bytes>") -> Any:
    """Unpickle bytes with RestrictedUnpickler; DataError (naming source) if refused or corrupt."""
    try:
        return RestrictedUnpickler(io.BytesIO(data), encoding="latin1").load()
    except pickle.UnpicklingError as e:
        raise DataError(f"{source}: unsafe or corrupt pickle ({e})") from e
    except (EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError, MemoryError) as e:
        raise DataError(f"{source}: corrupt pickle ({type(e).__name__}: {e})") from e


def _read_npy_object(path: Path) -> Any:
    """Read a .npy file holding a pickled object array, returning the single object inside."""
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, _fortran, dtype = np.lib.format.read_array_header_1_0(f)
            elif version in ((2, 0), (3, 0)):
                shape, _fortran, dtype = np.lib.format.read_array_header_2_0(f)
            else:
                raise DataError(f"{path}: unsupported .npy format version {version}")
            payload = f.read()
    except FileNotFoundError as e:
        raise DataError(f"{path}: cls_labels file not found") from e
    except ValueError as e:  # bad magic or header
        raise DataError(f"{path}: not a .npy file ({e})") from e
    if dtype != np.dtype(object):
        raise DataError(f"{path}: expected a pickled dict (object array), got dtype {dtype}")
    array = restricted_loads(payload, source=str(path))
    if not isinstance(array, np.ndarray) or array.dtype != object or array.shape != tuple(shape) or array.size != 1:
        raise DataError(f"{path}: expected a 0-d object array holding a dict, got shape {shape}")
    return array.reshape(()).item()


def _normalise_key(key: Any, path: Path) -> ClsKey:
    """Map numpy integer keys to int; keep str keys."""
    if isinstance(key, (int, np.integer)) and not isinstance(key, (bool, np.bool_)):
        return int(key)
    if isinstance(key, str):
        return key
    raise DataError(f"{path}: key {key!r} is neither an integer nor a string")


def load_cls_labels(path: str | os.PathLike) -> dict[ClsKey, np.ndarray]:
    """Load a cls_labels.npy dict {key -> float32[C]} safely (no arbitrary code can run)."""
    path = Path(path)
    table = _read_npy_object(path)
    if not isinstance(table, dict):
        raise DataError(f"{path}: expected a dict, got {type(table).__name__}")
    out: dict[ClsKey, np.ndarray] = {}
    width = None
    for key, value in table.items():
        key = _normalise_key(key, path)
        vec = np.asarray(value)
        if vec.ndim != 1 or vec.dtype.kind not in "biuf":
            raise DataError(f"{path}: value for {key!r} must be a 1-D numeric vector, got {vec.dtype}{list(vec.shape)}")
        if width is None:
            width = vec.shape[0]
        elif vec.shape[0] != width:
            raise DataError(f"{path}: value for {key!r} has {vec.shape[0]} entries, others have {width}")
        out[key] = vec.astype(np.float32)
    return out


def save_cls_labels(path: str | os.PathLike, table: dict[ClsKey, np.ndarray]) -> None:
    """Write a cls_labels.npy dict in the standard (np.save of a dict) layout, atomically."""
    buf = io.BytesIO()
    data = {k: np.asarray(v, dtype=np.float32) for k, v in table.items()}
    np.save(buf, np.array(data, dtype=object), allow_pickle=True)  # a 0-d object array, as np.save makes of a dict
    atomic_write_bytes(path, buf.getvalue())


_VOC_ID = re.compile(r"^\d{4}_\d{6}$")


def split_id_to_key(image_id: str) -> ClsKey:
    """Map a split id to its cls_labels key: '2007_000032' -> 2007000032; other ids stay strings."""
    if _VOC_ID.match(image_id):
        return int(image_id.replace("_", ""))
    return image_id


def key_to_split_id(key: ClsKey) -> str:
    """Inverse of split_id_to_key: 2007000032 -> '2007_000032'."""
    if isinstance(key, int):
        digits = f"{key:010d}"
        return f"{digits[:4]}_{digits[4:]}"
    return key


def lookup_cls_labels(table: dict[ClsKey, np.ndarray], image_id: str) -> np.ndarray | None:
    """The label vector of a split id (tried as its int key, then verbatim), or None if absent."""
    key = split_id_to_key(image_id)
    if key in table:
        return table[key]
    return table.get(image_id)
