"""Read NVIDIA StyleGAN2/StyleGAN3 network pickles without running any code from them.

NVIDIA's ``.pkl`` files (stylegan2-ada-pytorch, stylegan3) are plain pickles of a dict
``{"G", "D", "G_ema", "augment_pipe", "training_set_kwargs"}`` whose networks are pickled by
``torch_utils.persistence``: each is a call ``_reconstruct_persistent_obj(meta)`` where ``meta``
holds the Python source of the network's module (``module_src``), ``class_name`` and ``state``
(the module's ``__dict__``). NVIDIA's loader ``exec``s ``module_src``. We never do: a restricted
:class:`pickle.Unpickler` resolves only an allow-list of globals and turns every persistent object
into a :class:`PersistentRecord` (class name, state, init args/kwargs and the sha256 of the source).
Any other global — ``os.system``, ``builtins.eval``, ``subprocess.Popen``, ``torch.load`` … — is refused
with a :class:`~c2l_cli.errors.FormatError` naming it, before anything is called.

API:

- ``load_pickle(source) -> object``: the restricted unpickle of a file path, bytes or binary file.
  Also reads ``torch.save`` zip archives (its ``data.pkl`` with the same allow-list; storages are
  read from the archive by ``persistent_load``).
- ``read_network_pickle(source, key="G_ema") -> NetworkPickle``: the network under ``key`` as
  ``class_name``, ``arch`` (``"stylegan2"``/``"stylegan3"``/``None``), flat JSON-able ``init_kwargs``
  (``synthesis_kwargs`` merged in), a flat ``state_dict`` named like NVIDIA's
  ``named_parameters()``/``named_buffers()`` (``mapping.fc0.weight``, ``synthesis.b4.conv1.affine.bias``),
  and the root ``record``.
- ``record_state_dict(record) -> dict[str, Tensor]`` and ``plain_kwargs(obj)`` (EasyDicts → dicts,
  numpy scalars → Python numbers) for those who walk records themselves.
- ``load_state_dict_strict(module, state_dict, what)``: load into an ``nn.Module``; missing or
  unexpected keys or wrong shapes are a FormatError that lists a few.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import struct
import zipfile
import zlib
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Callable

import numpy as np
import torch

from ..errors import FormatError

__all__ = [
    "EasyDict",
    "NetworkPickle",
    "PersistentRecord",
    "RefusedGlobalError",
    "load_pickle",
    "load_state_dict_strict",
    "plain_kwargs",
    "read_network_pickle",
    "record_state_dict",
]


class RefusedGlobalError(FormatError):
    """The pickle references a global that is not on the allow-list; nothing was called."""


class EasyDict(dict):
    """Stand-in for ``dnnlib.util.EasyDict``: a dict whose keys are also readable as attributes."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


@dataclass
class PersistentRecord:
    """A network object from ``torch_utils.persistence``, recorded instead of rebuilt.

    ``module_src`` is never kept nor executed: only its sha256 and length, and ``module`` — a hint
    (``"networks_stylegan2"``/``"networks_stylegan3"``) found by plain substring search of the source's
    docstring, or ``meta["module_name"]`` when a file has one; ``None`` otherwise.
    """

    class_name: str
    state: dict[str, Any]
    init_args: tuple
    init_kwargs: dict[str, Any]
    module_src_sha256: str
    module_src_len: int
    module: str | None = None
    version: int | None = None

    @property
    def modules(self) -> dict[str, Any]:
        """The object's submodules (``state["_modules"]``)."""
        return dict(self.state.get("_modules") or {})


@dataclass
class NetworkPickle:
    """One network read from an NVIDIA pickle."""

    class_name: str
    arch: str | None
    init_kwargs: dict[str, Any]
    state_dict: "OrderedDict[str, torch.Tensor]"
    record: PersistentRecord
    extra: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# Allowed reconstructors. Each validates its arguments; none can reach arbitrary code.

# Substrings of the module docstrings of NVIDIA's network files (searched, never executed).
_MODULE_HINTS = (
    ("Alias-Free Generative Adversarial Networks", "networks_stylegan3"),
    ("Analyzing and Improving the Image Quality of StyleGAN", "networks_stylegan2"),
)


def _reconstruct_persistent_obj(meta: Any) -> PersistentRecord:
    """Replacement for ``torch_utils.persistence._reconstruct_persistent_obj``: a record, no exec."""
    if not isinstance(meta, dict):
        raise FormatError(f"persistent object: expected a dict of metadata, got {type(meta).__name__}")
    if meta.get("type") != "class":
        raise FormatError(f"persistent object of unsupported type {meta.get('type')!r}")
    class_name = meta.get("class_name")
    if not isinstance(class_name, str):
        raise FormatError("persistent object without a class_name")
    src = meta.get("module_src")
    if isinstance(src, str):
        raw = src.encode("utf-8", "surrogatepass")
    elif isinstance(src, (bytes, bytearray)):
        raw = bytes(src)
    else:
        raw = b""
    module = meta.get("module_name") if isinstance(meta.get("module_name"), str) else None
    if module is None:
        head = raw[:4096].decode("utf-8", "replace")
        for needle, name in _MODULE_HINTS:
            if needle in head:
                module = name
                break
    state = meta.get("state")
    if isinstance(state, tuple) and state and isinstance(state[0], dict):  # (dict, slots)
        state = state[0]
    if not isinstance(state, dict):
        raise FormatError(f"persistent object {class_name}: state is not a dict")
    init_args = state.get("_init_args", ())
    init_kwargs = state.get("_init_kwargs", {})
    return PersistentRecord(
        class_name=class_name,
        state=state,
        init_args=tuple(init_args) if isinstance(init_args, (tuple, list)) else (),
        init_kwargs=dict(init_kwargs) if isinstance(init_kwargs, dict) else {},
        module_src_sha256=hashlib.sha256(raw).hexdigest(),
        module_src_len=len(raw),
        module=module,
        version=meta.get("version") if isinstance(meta.get("version"), int) else None,
    )


def _load_from_bytes(data: Any) -> Any:
    """``torch.storage._load_from_bytes`` re-implemented with ``torch.load(weights_only=True)``."""
    if not isinstance(data, (bytes, bytearray)):
        raise FormatError("storage record is not bytes")
    try:
        obj = torch.load(io.BytesIO(bytes(data)), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch's message is long; keep the line that names what was refused.
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        why = next((ln for ln in lines if "GLOBAL" in ln or "global" in ln), lines[0] if lines else "refused")
        raise FormatError(f"refused to load an embedded torch storage: {why}") from exc
    except Exception as exc:  # noqa: BLE001 - any failure of the embedded record means a bad file
        raise FormatError(f"corrupt embedded torch storage ({type(exc).__name__}: {exc})") from exc
    if not isinstance(obj, (torch.storage.TypedStorage, torch.storage.UntypedStorage)):
        raise FormatError(f"embedded storage record holds a {type(obj).__name__}, not a storage")
    return obj


def _check_hooks(hooks: Any) -> None:
    if hooks is not None and not (isinstance(hooks, dict) and len(hooks) == 0):
        raise FormatError("a tensor in the pickle carries backward hooks; refusing it")


def _int_tuple(value: Any, what: str) -> tuple[int, ...]:
    if isinstance(value, torch.Size):
        return tuple(value)
    if not isinstance(value, (tuple, list)) or not all(isinstance(v, int) for v in value):
        raise FormatError(f"tensor record: bad {what}")
    return tuple(int(v) for v in value)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None):
    """``torch._utils._rebuild_tensor_v2``: a tensor view of a storage (hooks refused, metadata ignored)."""
    _check_hooks(backward_hooks)
    if isinstance(storage, torch.storage.TypedStorage):
        dtype, untyped = storage.dtype, storage._untyped_storage
    elif isinstance(storage, _ZipStorage):
        dtype, untyped = storage.dtype, storage.untyped
    else:
        raise FormatError(f"tensor record: expected a storage, got {type(storage).__name__}")
    if not isinstance(storage_offset, int):
        raise FormatError("tensor record: bad storage offset")
    size_t, stride_t = _int_tuple(size, "size"), _int_tuple(stride, "stride")
    if len(size_t) != len(stride_t):
        raise FormatError("tensor record: size and stride differ in length")
    itemsize = torch.empty((), dtype=dtype).element_size()
    numel = untyped.nbytes() // itemsize
    if any(s < 0 for s in size_t) or any(s < 0 for s in stride_t) or storage_offset < 0:
        raise FormatError("tensor record: negative size, stride or offset")
    if all(s > 0 for s in size_t):
        last = storage_offset + sum((n - 1) * s for n, s in zip(size_t, stride_t))
        if last >= numel:
            raise FormatError("tensor record: view runs past the end of its storage (truncated file?)")
    t = torch.empty((0,), dtype=dtype)
    t.set_(untyped, storage_offset, size_t, stride_t)
    return t


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None):
    """``torch._utils._rebuild_parameter``: the parameter's data as a plain tensor."""
    _check_hooks(backward_hooks)
    if not isinstance(data, torch.Tensor):
        raise FormatError("parameter record does not hold a tensor")
    return data


def _rebuild_parameter_with_state(data, requires_grad=False, backward_hooks=None, state=None):
    """``torch._utils._rebuild_parameter_with_state``: as :func:`_rebuild_parameter`; state ignored."""
    return _rebuild_parameter(data, requires_grad, backward_hooks)


def _np_reconstruct(subtype, shape, dtype):
    """``numpy.core.multiarray._reconstruct`` for plain ``ndarray`` only."""
    if subtype is not np.ndarray:
        raise FormatError(f"numpy array record of unsupported type {getattr(subtype, '__name__', subtype)!r}")
    return np.ndarray.__new__(np.ndarray, shape, dtype)


def _np_scalar(dtype, data=None):
    """``numpy.core.multiarray.scalar``: a numpy scalar from its dtype and raw bytes."""
    if not isinstance(dtype, np.dtype) or dtype.hasobject:
        raise FormatError("numpy scalar record with an object or invalid dtype")
    if not isinstance(data, (bytes, bytearray)) or len(data) != dtype.itemsize:
        raise FormatError("numpy scalar record: bad data")
    return np.frombuffer(bytes(data), dtype=dtype)[0].copy()


def _np_dtype(*args):
    """``numpy.dtype``; object dtypes are refused."""
    try:
        dt = np.dtype(*args)
    except Exception as exc:  # noqa: BLE001
        raise FormatError(f"bad numpy dtype record ({exc})") from exc
    if dt.hasobject:
        raise FormatError("numpy object dtype in the pickle; refusing it")
    return dt


def _np_frombuffer(buf, dtype, shape, order):
    """``numpy.core.numeric._frombuffer`` (pickle protocol 5 arrays)."""
    if isinstance(buf, pickle.PickleBuffer):
        buf = bytes(buf.raw())
    if not isinstance(buf, (bytes, bytearray)) or not isinstance(dtype, np.dtype) or dtype.hasobject:
        raise FormatError("bad numpy buffer record")
    return np.frombuffer(bytes(buf), dtype=dtype).reshape(shape, order=order).copy()


# (module, name) → the object the pickle gets. Exactly what NVIDIA's network pickles need.
_ALLOWED: dict[tuple[str, str], Any] = {
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _reconstruct_persistent_obj,
    ("torch.storage", "_load_from_bytes"): _load_from_bytes,
    ("dnnlib.util", "EasyDict"): EasyDict,
    ("dnnlib", "EasyDict"): EasyDict,
    ("collections", "OrderedDict"): OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter_with_state,
    ("numpy", "dtype"): _np_dtype,
    ("numpy", "ndarray"): np.ndarray,
}
for _np_mod in ("numpy.core", "numpy._core"):
    _ALLOWED[(f"{_np_mod}.multiarray", "scalar")] = _np_scalar
    _ALLOWED[(f"{_np_mod}.multiarray", "_reconstruct")] = _np_reconstruct
    _ALLOWED[(f"{_np_mod}.numeric", "_frombuffer")] = _np_frombuffer


# torch.save zip archives: storage type names → dtype (only usable inside persistent ids).
@dataclass(frozen=True)
class _StorageType:
    dtype: torch.dtype


_STORAGE_TYPES = {
    "FloatStorage": torch.float32, "DoubleStorage": torch.float64, "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
}


@dataclass(frozen=True)
class _ZipStorage:
    dtype: torch.dtype
    untyped: torch.UntypedStorage


class _RestrictedUnpickler(pickle.Unpickler):
    """A pickle.Unpickler that resolves only allow-listed globals (see module docstring)."""

    def __init__(self, file: IO[bytes], zip_reader: Callable[[str], bytes] | None = None) -> None:
        super().__init__(file)
        self._zip_reader = zip_reader
        self._zip_storages: dict[str, _ZipStorage] = {}

    def find_class(self, module: str, name: str) -> Any:
        obj = _ALLOWED.get((module, name))
        if obj is not None:
            return obj
        if self._zip_reader is not None and module == "torch" and name in _STORAGE_TYPES:
            return _StorageType(_STORAGE_TYPES[name])
        raise RefusedGlobalError(f"refused to load: the pickle references {module}.{name}")

    def persistent_load(self, pid: Any) -> Any:
        if self._zip_reader is None:
            raise FormatError("the pickle holds a persistent reference but is not a torch.save archive")
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise FormatError(f"unsupported persistent reference in the archive: {str(pid)[:80]}")
        stype, key = pid[1], pid[2]
        if not isinstance(stype, _StorageType) or not isinstance(key, str):
            raise FormatError("bad storage reference in the archive")
        if key not in self._zip_storages:
            data = self._zip_reader(key)
            untyped = torch.UntypedStorage.from_buffer(bytearray(data), dtype=torch.uint8) if data else torch.UntypedStorage(0)
            self._zip_storages[key] = _ZipStorage(stype.dtype, untyped)
        return self._zip_storages[key]


# ---------------------------------------------------------------------------------------------
# Reading

_CORRUPT = (
    pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, LookupError,
    struct.error, RuntimeError, UnicodeDecodeError, OverflowError, MemoryError, RecursionError,
    zipfile.BadZipFile, zlib.error, OSError,
)


def _unpickle_bytes(data: bytes, where: str) -> Any:
    if data[:2] == b"PK":
        return _unpickle_zip(data, where)
    return _RestrictedUnpickler(io.BytesIO(data)).load()


def _unpickle_zip(data: bytes, where: str) -> Any:
    """A ``torch.save`` zip archive: ``<root>/data.pkl`` + ``<root>/data/<key>`` storages."""
    zf = zipfile.ZipFile(io.BytesIO(data))
    names = zf.namelist()
    pkl = [n for n in names if n.endswith("data.pkl") and n.count("/") == 1]
    if not pkl:
        raise FormatError(f"{where}: a zip file, but not a torch.save archive (no data.pkl)")
    root = pkl[0].split("/")[0]

    def read(key: str) -> bytes:
        name = f"{root}/data/{key}"
        if name not in names:
            raise FormatError(f"{where}: the archive lacks storage {key!r} (truncated?)")
        return zf.read(name)

    return _RestrictedUnpickler(io.BytesIO(zf.read(pkl[0])), zip_reader=read).load()


def load_pickle(source: str | os.PathLike | bytes | IO[bytes]) -> Any:
    """Unpickle an NVIDIA network pickle with the allow-list; nothing from the file is executed."""
    where = "<bytes>"
    try:
        if isinstance(source, (bytes, bytearray)):
            data = bytes(source)
        elif isinstance(source, (str, os.PathLike)):
            where = str(source)
            data = Path(source).read_bytes()
        else:
            where = getattr(source, "name", "<stream>")
            data = source.read()
    except OSError as exc:
        raise FormatError(f"{where}: cannot read ({exc.strerror or exc})") from exc
    if not data:
        raise FormatError(f"{where}: empty file")
    try:
        return _unpickle_bytes(data, where)
    except RefusedGlobalError as exc:
        raise RefusedGlobalError(f"{where}: {exc}") from None
    except FormatError as exc:
        raise FormatError(f"{where}: {exc}") from exc
    except _CORRUPT as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise FormatError(f"{where}: not a valid network pickle (corrupt or truncated: {msg})") from exc


def plain_kwargs(obj: Any) -> Any:
    """EasyDict/OrderedDict → dict, tuples → lists, numpy scalars/arrays → Python values (JSON-able)."""
    if isinstance(obj, dict):
        return {str(k): plain_kwargs(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain_kwargs(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise FormatError(f"unexpected {type(obj).__name__} in the network's init arguments")


def record_state_dict(record: PersistentRecord, prefix: str = "") -> "OrderedDict[str, torch.Tensor]":
    """Flat parameters + persistent buffers of a record tree, named as ``nn.Module.state_dict()``."""
    out: OrderedDict[str, torch.Tensor] = OrderedDict()
    state = record.state
    non_persistent = state.get("_non_persistent_buffers_set") or set()
    for group in ("_parameters", "_buffers"):
        for name, value in (state.get(group) or {}).items():
            if value is None or (group == "_buffers" and name in non_persistent):
                continue
            if not isinstance(value, torch.Tensor):
                raise FormatError(f"{prefix}{name}: expected a tensor, got {type(value).__name__}")
            out[prefix + name] = value
    for name, sub in (state.get("_modules") or {}).items():
        if sub is None:
            continue
        if not isinstance(sub, PersistentRecord):
            raise FormatError(f"{prefix}{name}: a submodule that is not a persistent network object")
        out.update(record_state_dict(sub, prefix=f"{prefix}{name}."))
    return out


def _detect_arch(record: PersistentRecord) -> str | None:
    """``"stylegan2"``/``"stylegan3"`` from the structure of a Generator record (or its module hint)."""
    syn = record.modules.get("synthesis")
    if isinstance(syn, PersistentRecord):
        subs = syn.modules
        if "input" in subs and any(k.startswith("L") for k in subs):
            return "stylegan3"
        if any(k.startswith("b") and k[1:].isdigit() for k in subs):
            return "stylegan2"
    if record.module in ("networks_stylegan2", "networks_stylegan3"):
        return "stylegan" + record.module[-1]
    return None


def read_network_pickle(source: str | os.PathLike | bytes | IO[bytes], key: str = "G_ema") -> NetworkPickle:
    """The network under ``key`` (default ``G_ema``) of an NVIDIA pickle, as kwargs + flat state dict."""
    where = str(source) if isinstance(source, (str, os.PathLike)) else "<pickle>"
    obj = load_pickle(source)
    extra: dict[str, Any] = {}
    if isinstance(obj, dict):
        if key not in obj:
            keys = ", ".join(sorted(str(k) for k in obj)[:8])
            raise FormatError(f"{where}: no {key!r} in the pickle (it has: {keys or 'nothing'})")
        record = obj[key]
        if "training_set_kwargs" in obj:
            try:
                extra["training_set_kwargs"] = plain_kwargs(obj["training_set_kwargs"])
            except FormatError:
                pass
    else:
        record = obj
    if not isinstance(record, PersistentRecord):
        raise FormatError(f"{where}: {key!r} is a {type(record).__name__}, not an NVIDIA network object")
    kwargs = plain_kwargs(record.init_kwargs)
    if record.init_args:
        raise FormatError(f"{where}: {record.class_name} was built with positional arguments; unsupported")
    nested = kwargs.pop("synthesis_kwargs", None)  # stylegan2-ada-pytorch nests these
    if isinstance(nested, dict):
        for k, v in nested.items():
            kwargs.setdefault(k, v)
    return NetworkPickle(
        class_name=record.class_name,
        arch=_detect_arch(record),
        init_kwargs=kwargs,
        state_dict=record_state_dict(record),
        record=record,
        extra=extra,
    )


def load_state_dict_strict(module: torch.nn.Module, state_dict: dict[str, torch.Tensor], what: str = "weights") -> None:
    """Copy ``state_dict`` into ``module``; any missing/unexpected key or shape mismatch is a FormatError."""
    own = module.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]

    def few(keys: list[str]) -> str:
        return ", ".join(keys[:5]) + (f" (+{len(keys) - 5} more)" if len(keys) > 5 else "")

    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {few(missing)}")
        if unexpected:
            parts.append(f"unexpected {few(unexpected)}")
        raise FormatError(f"{what}: the weights do not fit the network: {'; '.join(parts)}")
    bad = [f"{k} {tuple(state_dict[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
           if tuple(state_dict[k].shape) != tuple(v.shape)]
    if bad:
        raise FormatError(f"{what}: wrong tensor shapes: {few(bad)}")
    with torch.no_grad():
        module.load_state_dict({k: v.to(own[k].dtype) for k, v in state_dict.items()}, strict=True)
