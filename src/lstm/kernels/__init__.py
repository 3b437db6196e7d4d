"""Backends that run the time loop, and the small dispatch that picks one.

A backend runs one layer in one direction over a padded, time-major sequence and returns the state
after every step (and, for LSTM and GRU, the gate activations). Layers know nothing of how: they
call :func:`get_backend` and then ``backend.lstm(...)``, ``backend.gru(...)`` or ``backend.rnn(...)``
with the signatures of :mod:`lstm.kernels.reference`. Every backend is tested against the
equations of :mod:`lstm.cells`.

========== ======================================================================================
name       what runs
========== ======================================================================================
autograd   the reference loop (:mod:`lstm.kernels.reference`), differentiated by autograd: the truth
bptt       the same forward loop, with the hand-written backward of :mod:`lstm.bptt`
cpu        fused C++ time loops, forward and BPTT (:mod:`lstm.kernels.cpu`), built on first use;
           ``"auto"`` picks it for CPU float32/float64 tensors, or ``bptt`` (after one warning)
           where it cannot be built
triton     fused Triton kernels, forward and BPTT (:mod:`lstm.kernels.triton`): picked by
           ``"auto"`` for CUDA float32/bfloat16 tensors; on a CPU it runs only when asked for by
           name under ``TRITON_INTERPRET=1`` (the Triton interpreter: slow, for tests)
========== ======================================================================================
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

__all__ = [
    "Backend",
    "available_backends",
    "describe",
    "get_backend",
    "register_backend",
    "runs_here",
]


@dataclass(frozen=True)
class Backend:
    """A named implementation of the three sequence functions.

    ``supports(device, dtype)`` says whether it can run tensors of that device and dtype;
    ``auto_priority`` orders the candidates of ``backend="auto"`` (higher first, negative never);
    ``auto_supports``, when given, narrows where ``"auto"`` may pick it (a backend that can run
    somewhere only slowly, when asked for by name).
    """

    name: str
    lstm: Callable
    gru: Callable
    rnn: Callable
    supports: Callable[[torch.device, torch.dtype], bool] = field(default=lambda d, t: True)
    auto_priority: int = 0
    auto_supports: Callable[[torch.device, torch.dtype], bool] | None = None
    # Optional: ``lstm`` for a layer's outputs only, ``(h_all, c_T)``, and ``gru`` for ``h_all``
    # only, where a backend has a faster way to skip the per-step cell states and gates (the cpu
    # backend's inference paths).
    lstm_last: Callable | None = None
    gru_last: Callable | None = None


_REGISTRY: dict[str, Callable[[], Backend | None]] = {}
_LOADED: dict[str, Backend | None] = {}


def register_backend(name: str, loader: Callable[[], Backend | None]) -> None:
    """Registers a backend by a loader called on first use (so a compiled backend builds only when
    asked for). A loader returns ``None`` when the backend cannot run on this machine."""
    _REGISTRY[name] = loader
    _LOADED.pop(name, None)
    _RESOLVED.clear()


def _load(name: str) -> Backend | None:
    if name not in _LOADED:
        _LOADED[name] = _REGISTRY[name]()
    return _LOADED[name]


def available_backends() -> list[str]:
    """The names of all registered backends (whether or not they can load here)."""
    return list(_REGISTRY)


def runs_here(name: str, device: str = "cpu", dtype: torch.dtype = torch.float32) -> bool:
    """Whether backend ``name`` loads on this machine and runs ``dtype`` tensors on ``device``
    (``"auto"`` and ``"torch"``, torch.nn's own layers, always do). A checkpoint trained with a
    backend that does not (the GPU's Triton kernels, read on a laptop) is loaded with ``"auto"``."""
    if name in ("auto", "torch"):
        return True
    try:
        get_backend(name, torch.device(device), dtype)
        return True
    except (RuntimeError, ValueError):
        return False


def describe(
    name: str, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
) -> str:
    """What a run prints about its kernels: ``name``, or for ``"auto"`` the backend it resolved
    to (``"auto -> cpu"``). A compiled backend is built here if it was not yet."""
    found = get_backend(name, torch.device(device), dtype).name
    return found if name != "auto" else f"auto -> {found}"


# (name, device, dtype, id(_LOADED)) -> Backend: layers ask on every call, so the answer is kept.
_RESOLVED: dict[tuple, Backend] = {}


def get_backend(name: str, device: torch.device, dtype: torch.dtype) -> Backend:
    """The backend called ``name`` or, for ``"auto"``, the fastest one that supports
    ``device`` and ``dtype``."""
    key = (name, device, dtype, id(_LOADED))
    found = _RESOLVED.get(key)
    if found is None:
        found = _RESOLVED[key] = _resolve(name, device, dtype)
    return found


def _resolve(name: str, device: torch.device, dtype: torch.dtype) -> Backend:
    if name == "auto":
        candidates = [b for b in map(_load, _REGISTRY) if b is not None and b.auto_priority >= 0]
        candidates = [b for b in candidates if (b.auto_supports or b.supports)(device, dtype)]
        return max(candidates, key=lambda b: b.auto_priority)
    if name not in _REGISTRY:
        raise ValueError(f"backend should be 'auto' or one of {sorted(_REGISTRY)}, got {name!r}")
    backend = _load(name)
    if backend is None:
        raise RuntimeError(
            f"backend {name!r} is not available on this machine (the warning issued when it "
            "was loaded says why)"
        )
    if not backend.supports(device, dtype):
        raise RuntimeError(f"backend {name!r} does not support {device.type} tensors of {dtype}")
    return backend


def _autograd() -> Backend:
    from lstm.kernels import reference

    return Backend(
        "autograd", reference.lstm_loop, reference.gru_loop, reference.rnn_loop, auto_priority=-1
    )


def _bptt() -> Backend:
    from lstm import bptt

    return Backend("bptt", bptt.lstm_sequence, bptt.gru_sequence, bptt.rnn_sequence)


register_backend("autograd", _autograd)
register_backend("bptt", _bptt)


def _cpu() -> Backend | None:
    from lstm.kernels import cpu

    return cpu.backend()


register_backend("cpu", _cpu)


def _triton() -> Backend | None:
    """The Triton backend where it can run: a CUDA device, or the interpreter (TRITON_INTERPRET=1,
    which must be set before the first use). Without either, nothing is imported."""
    import os
    import warnings

    interpret = os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "yes", "on")
    if not interpret and not torch.cuda.is_available():
        return None
    try:
        from lstm.kernels import triton as kernels
    except ImportError as error:  # triton missing, or a build that does not load here
        warnings.warn(f"the triton backend is unavailable: {error}", stacklevel=2)
        return None
    dtypes = kernels.SUPPORTED_DTYPES

    def supports(device: torch.device, dtype: torch.dtype) -> bool:
        if dtype not in dtypes:
            return False
        return device.type == "cpu" if kernels.interpreted() else device.type == "cuda"

    return Backend(
        "triton", kernels.lstm, kernels.gru, kernels.rnn, supports=supports, auto_priority=100,
        auto_supports=lambda device, dtype: device.type == "cuda" and supports(device, dtype),
    )  # fmt: skip


register_backend("triton", _triton)
