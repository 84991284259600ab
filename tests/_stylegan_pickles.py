"""Test helper: write NVIDIA-style network pickles (``torch_utils.persistence`` format) from records.

Used to make variants of the golden fixtures — another ``module_src``, kwargs nested the way
stylegan2-ada-pytorch nests them, a malicious object hidden somewhere — without NVIDIA's code: the
globals ``torch_utils.persistence._reconstruct_persistent_obj`` and ``dnnlib.util.EasyDict`` are
provided by stand-in modules registered in ``sys.modules`` only while pickling.
"""

from __future__ import annotations

import contextlib
import pickle
import sys
import types
from typing import Any, Iterator

from c2l_cli.formats.nvidia_pickle import EasyDict as OurEasyDict
from c2l_cli.formats.nvidia_pickle import PersistentRecord


def _reconstruct_persistent_obj(meta):  # never called: only its name is pickled
    raise AssertionError("stand-in only")


_reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
_reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"


class EasyDict(dict):
    pass


EasyDict.__module__ = "dnnlib.util"
EasyDict.__qualname__ = "EasyDict"


class Persistent:
    """Pickles as ``_reconstruct_persistent_obj(meta)``, exactly like NVIDIA's persistent classes."""

    def __init__(self, meta: dict) -> None:
        self.meta = meta

    def __reduce__(self):
        return (_reconstruct_persistent_obj, (self.meta,))


class Evil:
    """Pickles as ``func(*args)`` — the classic malicious pickle."""

    def __init__(self, func, *args) -> None:
        self.func = func
        self.args = args

    def __reduce__(self):
        return (self.func, self.args)


@contextlib.contextmanager
def stand_in_modules() -> Iterator[None]:
    names = {
        "torch_utils": types.ModuleType("torch_utils"),
        "torch_utils.persistence": types.ModuleType("torch_utils.persistence"),
        "dnnlib": types.ModuleType("dnnlib"),
        "dnnlib.util": types.ModuleType("dnnlib.util"),
    }
    names["torch_utils.persistence"]._reconstruct_persistent_obj = _reconstruct_persistent_obj
    names["dnnlib.util"].EasyDict = EasyDict
    saved = {k: sys.modules.get(k) for k in names}
    sys.modules.update(names)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v


def to_pickleable(obj: Any, module_src: str | None = None, edit=None, path: str = "") -> Any:
    """Records → :class:`Persistent` (with *module_src* if given), our EasyDicts → stand-in EasyDicts.

    ``edit(path, meta)`` may change each record's meta (path is e.g. ``"G_ema.synthesis"``).
    """
    if isinstance(obj, PersistentRecord):
        state = {k: to_pickleable(v, module_src, edit, f"{path}.{k}" if k != "_modules" else path)
                 for k, v in obj.state.items()}
        meta = {"type": "class", "version": obj.version or 6,
                "module_src": module_src if module_src is not None else "# placeholder\n",
                "class_name": obj.class_name, "state": state}
        if edit is not None:
            meta = edit(path, meta) or meta
        return Persistent(meta)
    if isinstance(obj, OurEasyDict):
        return EasyDict({k: to_pickleable(v, module_src, edit, f"{path}.{k}") for k, v in obj.items()})
    if type(obj) is dict:
        return {k: to_pickleable(v, module_src, edit, f"{path}.{k}" if path else str(k)) for k, v in obj.items()}
    if isinstance(obj, list):
        return [to_pickleable(v, module_src, edit, path) for v in obj]
    if isinstance(obj, tuple):
        return tuple(to_pickleable(v, module_src, edit, path) for v in obj)
    return obj


def dumps(obj: Any, protocol: int = 4) -> bytes:
    """Pickle *obj* (already converted with :func:`to_pickleable`) with the stand-in modules present."""
    with stand_in_modules():
        return pickle.dumps(obj, protocol=protocol)


def rewrite_fixture(src_path, dst_path, module_src: str | None = None, edit=None, extra: dict | None = None) -> None:
    """Re-write an NVIDIA fixture pickle with another module_src / edited metas / extra top-level entries."""
    from c2l_cli.formats.nvidia_pickle import load_pickle

    top = load_pickle(src_path)
    out = to_pickleable(top, module_src, edit)
    if extra:
        out.update(extra)
    with open(dst_path, "wb") as fh:
        fh.write(dumps(out))
