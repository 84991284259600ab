"""Speed helpers for CUDA: whole-function CUDA graphs and opt-in ``torch.compile``.

``GraphedFunction(fn)`` records ``fn`` once per input signature as a CUDA graph over static input
buffers and afterwards *replays* it: new inputs are copied into the static buffers, the recorded kernels
run with one launch, and the outputs are cloned out of the graph's memory. For the small diffusion prior
— hundreds of tiny kernels per step, bound by launch overhead and Python, not by arithmetic — this turns a
1000-step sampling loop into one launch. On the CPU (or when disabled) it simply calls ``fn``.

What a graphed ``fn`` must obey (the usual CUDA-graph rules): no host synchronisation (``.item()``,
``bool(tensor)``, printing tensors), no data-dependent shapes or control flow, no host→device copies of
Python data created inside it (make them inputs or module buffers), and every tensor that varies between
calls must be an *input* (tensor arguments). Tensors it reads from closures or modules (weights) are read
at their recorded addresses: updating weights in place (``copy_``, ``lerp_``, ``load_state_dict``) is seen
by later replays; replacing them (``module.to(other_device)``) is not — include such identity in ``key``.

``C2L_CUDA_GRAPHS`` (environment): ``auto`` (default; graphs where c2l considers them safe, i.e. repeated
prior sampling on CUDA), ``0`` (never, unless a caller asks explicitly with ``graph=True``), ``1`` (the
same as auto today; reserved for paths that are off under auto).
"""

from __future__ import annotations

import os
import warnings
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable

from .errors import UsageError

ENV_CUDA_GRAPHS = "C2L_CUDA_GRAPHS"
_ENV_VALUES = {"": "auto", "auto": "auto", "0": "0", "off": "0", "false": "0", "no": "0", "1": "1", "on": "1", "true": "1", "yes": "1"}


def cuda_graphs_setting() -> str:
    """``C2L_CUDA_GRAPHS`` normalised to ``"auto"``, ``"0"`` or ``"1"`` (UsageError for anything else)."""
    raw = os.environ.get(ENV_CUDA_GRAPHS, "").strip().lower()
    if raw not in _ENV_VALUES:
        raise UsageError(f"{ENV_CUDA_GRAPHS} must be auto, 0 or 1, got {raw!r}")
    return _ENV_VALUES[raw]


def cuda_graphs_enabled(device: Any, flag: "bool | None" = None) -> bool:
    """Whether to use CUDA graphs on *device*: an explicit *flag* wins; ``None`` follows ``C2L_CUDA_GRAPHS``.

    Graphs exist only on CUDA: on any other device the answer is False whatever the flag (the caller then
    runs eagerly, with identical results).
    """
    import torch

    dev = torch.device(device) if not isinstance(device, torch.device) else device
    if dev.type != "cuda" or not torch.cuda.is_available():
        return False
    if flag is not None:
        return bool(flag)
    return cuda_graphs_setting() != "0"


def maybe_compile(module: Any, enabled: bool, **kwargs: Any) -> Any:
    """``module.compile(**kwargs)`` in place when *enabled* (state-dict names stay unchanged); returns *module*.

    In-place ``nn.Module.compile`` rather than ``torch.compile(module)``: the latter wraps the module and
    prefixes every weight name with ``_orig_mod.``, which would leak into saved checkpoints.
    """
    if enabled:
        module.compile(**kwargs)
    return module


@dataclass
class GraphStats:
    """Counters, for tests and benchmarks."""

    eager_calls: int = 0
    captures: int = 0
    replays: int = 0
    evictions: int = 0
    failures: dict = field(default_factory=dict)  # key → error text of a capture that failed (then run eagerly)


@dataclass
class _Entry:
    static_inputs: list  # one static tensor per tensor argument, in order
    static_outputs: Any  # what fn returned at capture (a tensor or a tuple/list of tensors)
    graph: Any  # torch.cuda.CUDAGraph, or None in simulate mode
    seen: int = 0  # calls of this key so far (eager ones included)


def _is_tensor(x: Any) -> bool:
    import torch

    return isinstance(x, torch.Tensor)


class GraphedFunction:
    """``fn(*args)`` recorded as a CUDA graph per input signature and replayed (see the module docstring).

    *args*: tensors (copied into static buffers on every call; their shapes, dtypes, devices and strides are
    part of the key) and hashable non-tensor values (part of the key, passed to ``fn`` as they are, i.e.
    baked into the recording). *fn* must return a tensor or a tuple/list of tensors.

    - ``warmup``: eager runs on a side stream just before recording (lazy initialisation such as cuBLAS
      workspaces must not happen inside a capture).
    - ``capture_after``: eager calls of a key before it is recorded (``0``: record on the first call; ``1``:
      a one-off call costs nothing extra, the second call of the same signature records).
    - ``max_entries``: recorded graphs kept (least recently used evicted; each holds its own memory pool).
    - ``clone_outputs``: True returns fresh tensors; False returns the graph's static output tensors, which
      the next replay of the same key overwrites.
    - ``simulate``: take the static-buffer path on any device without CUDA graphs (``fn`` re-run on the
      static buffers instead of a replay) — for testing the plumbing on the CPU.
    - ``enabled``: False always calls ``fn`` eagerly; None graphs when every tensor input is on CUDA.

    A capture that raises is recorded in ``stats.failures`` with a warning and that key then runs eagerly.
    """

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        warmup: int = 1,
        capture_after: int = 0,
        max_entries: int = 4,
        clone_outputs: bool = True,
        simulate: bool = False,
        enabled: "bool | None" = None,
    ) -> None:
        if warmup < 0 or capture_after < 0 or max_entries < 1:
            raise ValueError("warmup and capture_after must be >= 0, max_entries >= 1")
        self.fn = fn
        self.warmup = warmup
        self.capture_after = capture_after
        self.max_entries = max_entries
        self.clone_outputs = clone_outputs
        self.simulate = simulate
        self.enabled = enabled
        self.stats = GraphStats()
        self._entries: "OrderedDict[Hashable, _Entry]" = OrderedDict()
        self._seen: dict[Hashable, int] = {}

    # --- keys -----------------------------------------------------------------------------------------------

    @staticmethod
    def signature(args: tuple, extra: Hashable = ()) -> tuple:
        """The cache key of a call: per argument its tensor layout or its value, plus *extra*."""
        parts = []
        for a in args:
            if _is_tensor(a):
                parts.append(("T", tuple(a.shape), tuple(a.stride()), str(a.dtype), str(a.device)))
            else:
                hash(a)  # TypeError for unhashable non-tensor arguments: they could not be part of a key
                parts.append(("V", type(a).__name__, a))
        return (tuple(parts), extra)

    def cached_keys(self) -> list:
        """Keys with a recorded graph, least recently used first."""
        return list(self._entries)

    def clear(self) -> None:
        """Drop every recorded graph (their memory pools are freed with them)."""
        self._entries.clear()
        self._seen.clear()

    # --- calling --------------------------------------------------------------------------------------------

    def _graphable(self, args: tuple) -> bool:
        if self.enabled is False:
            return False
        if self.simulate:
            return True
        import torch

        tensors = [a for a in args if _is_tensor(a)]
        return bool(tensors) and all(t.device.type == "cuda" for t in tensors) and torch.cuda.is_available()

    def __call__(self, *args: Any, key: Hashable = (), capture_after: "int | None" = None) -> Any:
        """``fn(*args)``, replayed from a recording when possible. *key*: extra cache-key material."""
        if not self._graphable(args):
            self.stats.eager_calls += 1
            return self.fn(*args)
        k = self.signature(args, key)
        if k in self.stats.failures:
            self.stats.eager_calls += 1
            return self.fn(*args)
        entry = self._entries.get(k)
        if entry is None:
            seen = self._seen.get(k, 0)
            wait = self.capture_after if capture_after is None else capture_after
            if seen < wait:
                if len(self._seen) >= 64 * self.max_entries:  # signatures seen once, e.g. many batch sizes: keep it small
                    self._seen.clear()
                self._seen[k] = seen + 1
                self.stats.eager_calls += 1
                return self.fn(*args)
            entry = self._capture(k, args)
            if entry is None:
                self.stats.eager_calls += 1
                return self.fn(*args)
        else:
            self._entries.move_to_end(k)
            self._copy_inputs(entry, args)
        self._replay(entry, args)
        return self._outputs(entry)

    def _copy_inputs(self, entry: _Entry, args: tuple) -> None:
        tensors = [a for a in args if _is_tensor(a)]
        for dst, src in zip(entry.static_inputs, tensors):
            if dst.data_ptr() != src.data_ptr():
                dst.copy_(src)

    def _static_args(self, entry: _Entry, args: tuple) -> tuple:
        it = iter(entry.static_inputs)
        return tuple(next(it) if _is_tensor(a) else a for a in args)

    def _capture(self, k: Hashable, args: tuple) -> "_Entry | None":
        import torch

        with torch.inference_mode(False):  # normal tensors: later calls may copy into them outside inference mode
            static = [a.detach().clone() if _is_tensor(a) else None for a in args]
        static_inputs = [s for s in static if s is not None]
        entry = _Entry(static_inputs=static_inputs, static_outputs=None, graph=None)
        sargs = self._static_args(entry, args)
        try:
            if self.simulate:
                entry.static_outputs = self.fn(*sargs)
            else:
                with torch.cuda.device(static_inputs[0].device):  # record on the inputs' device
                    side = torch.cuda.Stream()
                    side.wait_stream(torch.cuda.current_stream())
                    with torch.cuda.stream(side):
                        for _ in range(self.warmup):
                            self.fn(*sargs)
                    torch.cuda.current_stream().wait_stream(side)
                    graph = torch.cuda.CUDAGraph()
                    # thread_local: other threads (NCCL watchdog, pin-memory workers) may keep making CUDA calls
                    with torch.cuda.graph(graph, capture_error_mode="thread_local"):
                        entry.static_outputs = self.fn(*sargs)
                entry.graph = graph
        except Exception as exc:  # an op that cannot be captured: remember, warn once, run eagerly from now on
            self.stats.failures[k] = f"{type(exc).__name__}: {exc}"
            warnings.warn(f"CUDA graph capture failed, running eagerly instead ({type(exc).__name__}: {exc})", RuntimeWarning, stacklevel=3)
            return None
        _flatten(entry.static_outputs)  # TypeError now for outputs a replay could not hand back
        self.stats.captures += 1
        self._entries[k] = entry
        self._seen.pop(k, None)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
            self.stats.evictions += 1
        return entry

    def _replay(self, entry: _Entry, args: tuple) -> None:
        self.stats.replays += 1
        if entry.graph is not None:
            import torch

            with torch.cuda.device(entry.static_inputs[0].device):
                entry.graph.replay()
            return
        # simulate: re-run fn on the static buffers and write the results into the static outputs, as a replay would
        import torch

        fresh = self.fn(*self._static_args(entry, args))
        with torch.inference_mode():  # the recorded outputs may be inference tensors (captured in inference mode)
            for dst, src in zip(_flatten(entry.static_outputs), _flatten(fresh)):
                dst.copy_(src)

    def _outputs(self, entry: _Entry) -> Any:
        out = entry.static_outputs
        if not self.clone_outputs:
            return out
        if _is_tensor(out):
            return out.clone()
        return type(out)(o.clone() for o in out)


def _flatten(out: Any) -> list:
    if _is_tensor(out):
        return [out]
    if isinstance(out, (tuple, list)) and all(_is_tensor(o) for o in out):
        return list(out)
    raise TypeError(f"a graphed function must return a tensor or a tuple/list of tensors, got {type(out).__name__}")


__all__ = [
    "ENV_CUDA_GRAPHS",
    "GraphedFunction",
    "GraphStats",
    "cuda_graphs_enabled",
    "cuda_graphs_setting",
    "maybe_compile",
]
