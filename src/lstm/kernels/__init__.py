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
========== ======================================================================================

GPU backends register themselves here beside these.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

__all__ = ["Backend", "available_backends", "get_backend", "register_backend"]


@dataclass(frozen=True)
class Backend:
    """A named implementation of the three sequence functions.

    ``supports(device, dtype)`` says whether it can run tensors of that device and dtype;
    ``auto_priority`` orders the candidates of ``backend="auto"`` (higher first, negative never).
    """

    name: str
    lstm: Callable
    gru: Callable
    rnn: Callable
    supports: Callable[[torch.device, torch.dtype], bool] = field(default=lambda d, t: True)
    auto_priority: int = 0


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
        candidates = [b for b in candidates if b.supports(device, dtype)]
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
