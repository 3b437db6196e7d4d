"""The ``"cpu"`` backend: fused LSTM, GRU and RNN time loops in C++, forward and hand-written BPTT.

The C++ source (``recurrent.cpp`` and ``kernels.h`` beside this file) is compiled by
:func:`torch.utils.cpp_extension.load` on first use and cached under ``~/.cache/lstm/cpu-kernels``
(or ``$LSTM_CACHE_DIR``), keyed by a hash of the sources, the flags, the torch and Python versions;
a second process reuses the build in well under a second. Where no compiler is present
:func:`load_extension` warns once and returns ``None``: ``backend="auto"`` then runs ``"bptt"``.

What runs (see kernels.h): the input projection of every step as one GEMM; per step one product
for ``W_hh h`` (on weights packed once per call into column panels, split over torch's threads)
and one vectorized pass over the gates (AVX-512 or AVX2+FMA where the CPU has it, picked at run
time, so one cached build serves every machine); the backward per step is one pass and one
product, the weight gradients a few big GEMMs after the loop (float32's by oneDNN where the
AVX-512 copy runs, otherwise by MKL; the extension's ``isa()`` and ``gemm_library()`` say
which). :func:`lstm_last` and :func:`gru_last` (a layer's inference) keep only the outputs and
project the input a chunk of steps at a time. Gradients with respect to every output (the
states and the gates) are accepted, as in :mod:`lstm.bptt`. Double backward is not supported on
this path (``once_differentiable``); use ``backend="bptt"`` for Hessian-vector products.
"""

from __future__ import annotations

import hashlib
import os
import sys
import warnings
from pathlib import Path
from types import ModuleType

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

__all__ = [
    "backend",
    "build_error",
    "gru",
    "gru_last",
    "load_extension",
    "lstm",
    "lstm_last",
    "rnn",
]

_SOURCES = ("recurrent.cpp", "kernels.h")
# -O3 vectorizes the loops; no -march: the AVX-512, AVX2 or portable copy is chosen at run time
# (see recurrent.cpp).
_CFLAGS = ["-O3", "-ffp-contract=fast", "-fno-math-errno", "-fno-trapping-math", "-fopenmp"]
# -fopenmp links libgomp.so.1: the copy torch already loaded (same soname), so the per-step
# products share torch's thread team and torch.set_num_threads.
_LDFLAGS = ["-fopenmp"]

_ext: ModuleType | None = None
_error: str | None = None


def _build_key(here: Path | None = None) -> str:
    """A hash of what the build depends on. The source folder and the torch installation are part
    of it, not only their contents: ninja's build file names their paths, so two checkouts (or two
    virtual environments) sharing one build folder would rebuild each other's kernels on every
    first use (seen: 40-80 s per process with three worktrees of the same sources)."""
    here = Path(__file__).parent if here is None else here
    digest = hashlib.sha256()
    for name in _SOURCES:
        digest.update((here / name).read_bytes())
    digest.update(" ".join(_CFLAGS + _LDFLAGS).encode())
    digest.update(torch.__version__.encode())
    digest.update(sys.version.encode())
    digest.update(str(here.resolve()).encode())
    digest.update(str(Path(torch.__file__).resolve().parent).encode())
    return digest.hexdigest()[:16]


def cache_dir() -> Path:
    """Where built kernels are kept: ``$LSTM_CACHE_DIR`` or ``~/.cache/lstm`` (per user)."""
    root = os.environ.get("LSTM_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "lstm"
    )
    return Path(root) / "cpu-kernels"


def _build() -> ModuleType:
    from torch.utils import cpp_extension

    key = _build_key()
    build_dir = cache_dir() / f"torch-{torch.__version__}-{key}"
    build_dir.mkdir(parents=True, exist_ok=True)
    here = Path(__file__).parent
    return cpp_extension.load(
        name=f"lstm_cpu_{key}",
        sources=[str(here / "recurrent.cpp")],
        extra_cflags=_CFLAGS,
        extra_ldflags=_LDFLAGS,
        extra_include_paths=[str(here)],
        build_directory=str(build_dir),
        verbose=False,
    )


def load_extension() -> ModuleType | None:
    """The compiled kernels, built on first call; ``None`` (after one warning) if they cannot be
    built here, with the reason in :func:`build_error`."""
    global _ext, _error
    if _ext is not None or _error is not None:
        return _ext
    if os.environ.get("LSTM_NO_CPU_KERNELS"):
        _error = "disabled by LSTM_NO_CPU_KERNELS"
        return None
    try:
        _ext = _build()
    except Exception as error:  # a missing compiler shows up as several exception types
        lines = [line for line in str(error).strip().splitlines() if line.strip()]
        _error = f"{type(error).__name__}: {lines[-1] if lines else ''}".strip()
        warnings.warn(
            "lstm: could not build the fused CPU kernels, so layers run the slower 'bptt' "
            f"backend (Python time loop). Reason: {_error}. Install g++ and ninja "
            "(pip install ninja) to get them.",
            RuntimeWarning,
            stacklevel=2,
        )
    return _ext


def build_error() -> str | None:
    """Why the kernels could not be built (``None`` if they were, or were never tried)."""
    return _error


def _ext_or_raise() -> ModuleType:
    ext = _ext if _ext is not None else load_extension()
    if ext is None:
        raise RuntimeError(f"the fused CPU kernels are not available: {_error}")
    return ext


def _grad_wanted(*tensors: Tensor | None) -> bool:
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


# --------------------------------------------------------------------------------------------
# LSTM
# --------------------------------------------------------------------------------------------


class LSTMFused(torch.autograd.Function):
    """Whole-sequence LSTM (one layer, one direction) on the fused kernels."""

    @staticmethod
    def forward(ctx, x, h0, c0, weight_ih, weight_hh, bias, weight_hr, mask):
        h_all, c_all, gates, tanh_c = _ext.lstm_forward(
            x, h0, c0, weight_ih, weight_hh, bias, weight_hr, mask, True
        )
        ctx.save_for_backward(
            x, h0, c0, weight_ih, weight_hh, weight_hr, mask, h_all, c_all, gates, tanh_c
        )
        ctx.set_materialize_grads(False)
        return h_all, c_all, gates

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_h_all, grad_c_all, grad_gates):
        x, h0, c0, w_ih, w_hh, w_hr, mask, h_all, c_all, gates, tanh_c = ctx.saved_tensors
        if grad_h_all is None and grad_c_all is None and grad_gates is None:
            return (None,) * 8
        grads = _ext.lstm_backward(
            grad_h_all, grad_c_all, grad_gates, x, h0, c0, w_ih, w_hh, w_hr, mask,
            h_all, c_all, gates, tanh_c, list(ctx.needs_input_grad[:7]),
        )  # fmt: skip
        return (*grads, None)


def lstm(
    x: Tensor,  # (T, B, I)
    h0: Tensor,  # (B, P)
    c0: Tensor,  # (B, H)
    weight_ih: Tensor,  # (4H, I)
    weight_hh: Tensor,  # (4H, P)
    bias: Tensor | None,  # (4H,) b_ih + b_hh
    weight_hr: Tensor | None = None,  # (P, H)
    mask: Tensor | None = None,  # (T, B, 1) bool
) -> tuple[Tensor, Tensor, Tensor]:
    """LSTM over a sequence on the fused kernels: ``(h_all (T, B, P), c_all (T, B, H),
    gates (T, B, 4H))``, as :func:`lstm.kernels.reference.lstm_loop`."""
    ext = _ext_or_raise()
    if _grad_wanted(x, h0, c0, weight_ih, weight_hh, bias, weight_hr):
        return LSTMFused.apply(x, h0, c0, weight_ih, weight_hh, bias, weight_hr, mask)
    h_all, c_all, gates, _ = ext.lstm_forward(
        x, h0, c0, weight_ih, weight_hh, bias, weight_hr, mask, False
    )
    return h_all, c_all, gates


def lstm_last(
    x: Tensor,  # (T, B, I)
    h0: Tensor,  # (B, P)
    c0: Tensor,  # (B, H)
    weight_ih: Tensor,  # (4H, I)
    weight_hh: Tensor,  # (4H, P)
    bias: Tensor | None,  # (4H,) b_ih + b_hh
    weight_hr: Tensor | None = None,  # (P, H)
    mask: Tensor | None = None,  # (T, B, 1) bool
) -> tuple[Tensor, Tensor]:
    """:func:`lstm` for when only ``h_all (T, B, P)`` and the last cell state ``c_T (B, H)`` are
    wanted (a layer's outputs): without a gradient it skips the per-step cell states and gates
    and runs the input projection a chunk of steps at a time (``lstm_infer`` in recurrent.cpp)."""
    ext = _ext_or_raise()
    if _grad_wanted(x, h0, c0, weight_ih, weight_hh, bias, weight_hr):
        h_all, c_all, _ = LSTMFused.apply(x, h0, c0, weight_ih, weight_hh, bias, weight_hr, mask)
        return h_all, c_all[-1]
    h_all, c_last = ext.lstm_infer(x, h0, c0, weight_ih, weight_hh, bias, weight_hr, mask, 0)
    return h_all, c_last


# --------------------------------------------------------------------------------------------
# GRU
# --------------------------------------------------------------------------------------------


class GRUFused(torch.autograd.Function):
    """Whole-sequence GRU (one layer, one direction) on the fused kernels."""

    @staticmethod
    def forward(ctx, x, h0, weight_ih, weight_hh, bias_ih, bias_hh, mask):
        h_all, gates, gh_n = _ext.gru_forward(
            x, h0, weight_ih, weight_hh, bias_ih, bias_hh, mask, True
        )
        ctx.save_for_backward(x, h0, weight_ih, weight_hh, mask, h_all, gates, gh_n)
        ctx.set_materialize_grads(False)
        return h_all, gates

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_h_all, grad_gates):
        x, h0, w_ih, w_hh, mask, h_all, gates, gh_n = ctx.saved_tensors
        if grad_h_all is None and grad_gates is None:
            return (None,) * 7
        grads = _ext.gru_backward(
            grad_h_all, grad_gates, x, h0, w_ih, w_hh, mask, h_all, gates, gh_n,
            list(ctx.needs_input_grad[:6]),
        )  # fmt: skip
        return (*grads, None)


def gru(
    x: Tensor,  # (T, B, I)
    h0: Tensor,  # (B, H)
    weight_ih: Tensor,  # (3H, I)
    weight_hh: Tensor,  # (3H, H)
    bias_ih: Tensor | None,  # (3H,)
    bias_hh: Tensor | None,  # (3H,)
    mask: Tensor | None = None,  # (T, B, 1) bool
) -> tuple[Tensor, Tensor]:
    """GRU over a sequence on the fused kernels: ``(h_all (T, B, H), gates (T, B, 3H))``."""
    ext = _ext_or_raise()
    if _grad_wanted(x, h0, weight_ih, weight_hh, bias_ih, bias_hh):
        return GRUFused.apply(x, h0, weight_ih, weight_hh, bias_ih, bias_hh, mask)
    h_all, gates, _ = ext.gru_forward(x, h0, weight_ih, weight_hh, bias_ih, bias_hh, mask, False)
    return h_all, gates


def gru_last(
    x: Tensor,  # (T, B, I)
    h0: Tensor,  # (B, H)
    weight_ih: Tensor,  # (3H, I)
    weight_hh: Tensor,  # (3H, H)
    bias_ih: Tensor | None,  # (3H,)
    bias_hh: Tensor | None,  # (3H,)
    mask: Tensor | None = None,  # (T, B, 1) bool
) -> Tensor:
    """:func:`gru` for when only ``h_all (T, B, H)`` is wanted (a layer's outputs): without a
    gradient it keeps no gates and runs the input projection a chunk of steps at a time
    (``gru_infer`` in recurrent.cpp), as :func:`lstm_last`."""
    ext = _ext_or_raise()
    if _grad_wanted(x, h0, weight_ih, weight_hh, bias_ih, bias_hh):
        return GRUFused.apply(x, h0, weight_ih, weight_hh, bias_ih, bias_hh, mask)[0]
    return ext.gru_infer(x, h0, weight_ih, weight_hh, bias_ih, bias_hh, mask, 0)


# --------------------------------------------------------------------------------------------
# Plain RNN
# --------------------------------------------------------------------------------------------


class RNNFused(torch.autograd.Function):
    """Whole-sequence tanh/relu RNN (one layer, one direction) on the fused kernels."""

    @staticmethod
    def forward(ctx, x, h0, weight_ih, weight_hh, bias, mask, nonlinearity):
        h_all = _ext.rnn_forward(x, h0, weight_ih, weight_hh, bias, mask, nonlinearity)
        ctx.save_for_backward(x, h0, weight_ih, weight_hh, mask, h_all)
        ctx.nonlinearity = nonlinearity
        ctx.set_materialize_grads(False)
        return h_all

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_h_all):
        x, h0, w_ih, w_hh, mask, h_all = ctx.saved_tensors
        if grad_h_all is None:
            return (None,) * 7
        grads = _ext.rnn_backward(
            grad_h_all, x, h0, w_ih, w_hh, mask, h_all, ctx.nonlinearity,
            list(ctx.needs_input_grad[:5]),
        )  # fmt: skip
        return (*grads, None, None)


def rnn(
    x: Tensor,  # (T, B, I)
    h0: Tensor,  # (B, H)
    weight_ih: Tensor,  # (H, I)
    weight_hh: Tensor,  # (H, H)
    bias: Tensor | None,  # (H,) b_ih + b_hh
    mask: Tensor | None = None,  # (T, B, 1) bool
    nonlinearity: str = "tanh",
) -> Tensor:
    """Plain RNN over a sequence on the fused kernels: ``h_all (T, B, H)``."""
    ext = _ext_or_raise()
    if _grad_wanted(x, h0, weight_ih, weight_hh, bias):
        return RNNFused.apply(x, h0, weight_ih, weight_hh, bias, mask, nonlinearity)
    return ext.rnn_forward(x, h0, weight_ih, weight_hh, bias, mask, nonlinearity)


def supports(device: torch.device, dtype: torch.dtype) -> bool:
    """CPU tensors of float32 (the fast path) or float64 (exact, for testing)."""
    return torch.device(device).type == "cpu" and dtype in (torch.float32, torch.float64)


def backend():
    """The registry's loader: the backend, or ``None`` (after one warning) if it cannot build."""
    from lstm.kernels import Backend

    if load_extension() is None:
        return None
    return Backend(
        "cpu", lstm, gru, rnn, supports=supports, auto_priority=10, lstm_last=lstm_last,
        gru_last=gru_last,
    )  # fmt: skip
