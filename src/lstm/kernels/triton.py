r"""Fused Triton kernels for the LSTM, GRU and plain RNN: forward and hand-written BPTT.

The recipe is haste's (and cuDNN's): the input projection of all ``T·B`` rows is one big GEMM done
by torch, then only the recurrence runs in Triton, then (backward) the weight gradients are a few
big GEMMs done by torch after the loop::

    forward:   XP = X·W_ihᵀ + b                    one GEMM, torch        (T, B, G)
               for t in 0..T-1:  launch a step     recurrent GEMM + gates, Triton
    backward:  for t in T-1..0:  launch a step     dZ_{t+1}·W_hh + gate derivatives, Triton
               dW_ih = dZᵀX, dW_hh = dZᵀH_prev, db = Σ dZ, dX = dZ·W_ih   big GEMMs, torch

Two designs of the forward recurrence:

(a) **per step** (every cell, forward and backward): one launch per time step; a program owns a
    tile of ``BLOCK_B`` batch rows by ``BLOCK_H`` hidden units, runs the recurrent GEMM for all the
    gates of those units (``tl.dot`` over blocks of ``h_{t-1}``) and applies the gate arithmetic
    to the accumulators before anything leaves the chip. A step launch reads only device memory
    and never synchronises with the host, so the loop can be captured in a CUDA graph.
(b) **persistent** (LSTM forward, no projection): one launch for the whole sequence. A program
    owns ``BLOCK_B`` batch rows and *all* hidden units, loads ``W_hh`` once, keeps it in registers
    for every step and keeps ``h`` and ``C`` on chip between steps (the Persistent RNN idea).
    Triton has no grid-wide barrier (and the interpreter runs programs one after another, so a
    spin-wait barrier would deadlock there), so one program must hold all of ``W_hh``: this design
    is limited to small hidden sizes (``H <= config.persistent_max_hidden``).

Selection (:func:`choose_design`): persistent when there is no projection, ``H`` is at most
``config.persistent_max_hidden`` (64) and ``B`` at most ``config.persistent_max_batch`` (64);
per step otherwise. These thresholds are a first guess from register budgets (4·64·64 float32
weights are 64 KiB, a quarter of an SM's register file), *not* a measurement: on a GPU they must
be set by ``benchmarks/gpu_lstm.py``.

Numerics: float32 and bfloat16 inputs. The recurrent product accumulates in float32 (``tl.dot``
with float32 accumulators; float32 operands use ``input_precision="ieee"``, not TF32, so float32
results match the reference to rounding). For bfloat16 the input projection's result, the gate
activations saved for the backward and the LSTM cell state are kept in float32 (the returned
``gates`` and ``c_all`` are cast to bfloat16); ``h``, the next step's GEMM operand, and the
backward's pre-activation gradients, the operands of the big weight-gradient GEMMs, are stored in
bfloat16. Under the Triton interpreter (``TRITON_INTERPRET=1``, how the tests run on a CPU)
bfloat16 GEMM operands are widened to float32 first, because the interpreter's ``tl.dot`` does not
support bfloat16; the widening is exact, so the products are the same and only the summation
order differs from the GPU's.

The LSTM projection (``proj_size > 0``, ``h = W_hr·(o ⊙ tanh C)``) runs in torch between the
step launches (the kernel writes the unprojected ``o ⊙ tanh C``; torch projects and applies the
mask), and so does the projected backward's ``δh·W_hr``: it keeps every kernel a single
GEMM-plus-gates shape. Ragged lengths: ``mask[t, b]`` False carries the state through unchanged,
in the kernels. Multi-layer and bidirectional stacks come from :mod:`lstm.layers`, which calls
these functions per layer and direction.

The backward is once-differentiable (no double backward; use the ``bptt`` backend for
Hessian-vector products).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import triton
import triton.language as tl
from torch import Tensor
from torch.autograd.function import once_differentiable

from lstm import bptt
from lstm.kernels.reference import input_projection

__all__ = ["Config", "choose_design", "config", "gru", "interpreted", "lstm", "rnn"]

# @triton.jit decides at decoration time whether a kernel is compiled or interpreted: remember
# which this module got (the tests set TRITON_INTERPRET=1 before importing it on a CPU machine).
_INTERPRETED: bool = os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "yes", "on")

SUPPORTED_DTYPES = (torch.float32, torch.bfloat16)


def interpreted() -> bool:
    """Whether this module's kernels run under the Triton interpreter (on the CPU)."""
    return _INTERPRETED


@dataclass(frozen=True)
class Config:
    """Tile sizes and the design choice. ``tl.dot`` wants every tile side >= 16.

    ``design``: ``"auto"`` (:func:`choose_design`), ``"per_step"`` or ``"persistent"`` (LSTM
    forward only; falls back to per step where it cannot run: with a projection or a hidden size
    over ``persistent_max_hidden``).
    """

    block_h: int = 32  # hidden units per program (per gate)
    block_k: int = 32  # reduction tile of the recurrent GEMM
    max_block_b: int = 64  # batch rows per program, at most
    design: str = "auto"
    persistent_max_hidden: int = 64
    persistent_max_batch: int = 64
    num_warps: int = 4
    persistent_num_warps: int = 8  # 4·64·64 float32 weights in registers need the threads


config = Config()


def _pow2_at_least_16(n: int) -> int:
    return max(16, triton.next_power_of_2(n))


def _block_b(B: int) -> int:
    return min(_pow2_at_least_16(B), config.max_block_b)


def choose_design(B: int, H: int, projected: bool) -> str:
    """``"persistent"`` or ``"per_step"`` for an LSTM forward of batch ``B`` and hidden size ``H``
    (see the module docstring: a first guess, to be replaced by measurement on a GPU)."""
    if config.design == "per_step" or projected or H > config.persistent_max_hidden:
        return "per_step"
    if config.design == "persistent":
        return "persistent"
    return "persistent" if B <= config.persistent_max_batch else "per_step"


# --------------------------------------------------------------------------------------------
# Pointwise helpers (float32 in, float32 out)
# --------------------------------------------------------------------------------------------


@triton.jit
def _sigmoid(x):
    return 1.0 / (1.0 + tl.exp(-x))


@triton.jit
def _tanh(x):
    # tanh via exp(-2|x|) <= 1: never overflows, accurate to float32 rounding away from 0.
    e = tl.exp(-2.0 * tl.abs(x))
    t = (1.0 - e) / (1.0 + e)
    return tl.where(x < 0, -t, t)


@triton.jit
def _dot(a, b, FP32_DOT: tl.constexpr):
    """``a @ b`` accumulated in float32. FP32_DOT: widen the operands and multiply in exact
    float32 (float32 inputs, and bfloat16 under the interpreter); else bfloat16 tensor cores."""
    if FP32_DOT:
        out = tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision="ieee")
    else:
        out = tl.dot(a, b, out_dtype=tl.float32)
    return out


@triton.jit
def _load_tile(ptr, rows, cols, n_rows, n_cols, row_stride):
    """A float32 ``(len(rows), len(cols))`` tile of a row-major matrix, zeros outside it."""
    ok = (rows[:, None] < n_rows) & (cols[None, :] < n_cols)
    return tl.load(ptr + rows[:, None] * row_stride + cols[None, :], mask=ok, other=0.0).to(
        tl.float32
    )


@triton.jit
def _load_mask(mask_ptr, rows, B):
    """``(BLOCK_B, 1)`` float32: 1 where the step is real for that row, 0 where it is padding."""
    m = tl.load(mask_ptr + rows, mask=rows < B, other=0)
    return (m != 0).to(tl.float32)[:, None]


# --------------------------------------------------------------------------------------------
# LSTM kernels
# --------------------------------------------------------------------------------------------


@triton.jit
def _grad_arriving_at_h(
    grad_h_ptr, d_next_ptr, w_ptr, rows, cols, ok, at_h, B, H, K,
    HAS_GRAD_H: tl.constexpr, LAST: tl.constexpr, FP32_DOT: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    """The gradient at h_t from the output at t and from step t+1's pre-activations:
    ``grad_h[t] + d_next · W_hh`` (the recurrent GEMM, ``d_next`` (B, K), ``W_hh`` (K, H)). Each
    cell adds its own pass-through term (padding, or the GRU's ``z ⊙ h``)."""
    dh = tl.zeros((BLOCK_B, BLOCK_H), dtype=tl.float32)
    if HAS_GRAD_H:
        dh += tl.load(grad_h_ptr + at_h, mask=ok, other=0.0).to(tl.float32)
    if not LAST:
        for k0 in range(0, K, BLOCK_K):
            ks = k0 + tl.arange(0, BLOCK_K)
            d_ok = (rows[:, None] < B) & (ks[None, :] < K)
            d = tl.load(d_next_ptr + rows[:, None] * K + ks[None, :], mask=d_ok, other=0.0)
            w_ok = (ks[:, None] < K) & (cols[None, :] < H)
            w = tl.load(w_ptr + ks[:, None] * H + cols[None, :], mask=w_ok, other=0.0)
            dh += _dot(d, w, FP32_DOT)
    return dh


@triton.jit
def _lstm_fwd_step(
    xp_ptr,  # (B, 4H)  W_ih x_t + b, this step
    h_prev_ptr,  # (B, P)  h_{t-1}
    c_prev_ptr,  # (B, H)  float32 C_{t-1}
    w_ptr,  # (P, 4H)  W_hhᵀ, contiguous
    mask_ptr,  # (B,)  int8, 1 = real step (read only if HAS_MASK)
    h_out_ptr,  # (B, H)  h_t (carried through padding), or o ⊙ tanh C_t when PROJECTED
    c_out_ptr,  # (B, H)  float32 C_t (carried through padding)
    gates_ptr,  # (B, 4H)  i, f, g, o
    B,
    H,
    P,
    HAS_MASK: tl.constexpr,
    PROJECTED: tl.constexpr,
    FP32_DOT: tl.constexpr,
    BLOCK_B: tl.constexpr,
    BLOCK_H: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)  # batch rows of this program
    cols = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)  # hidden units of this program
    G = 4 * H
    # z = h_{t-1} · W_hhᵀ for the four gates of these units: (BLOCK_B, BLOCK_H) each.
    acc_i = tl.zeros((BLOCK_B, BLOCK_H), dtype=tl.float32)
    acc_f = tl.zeros((BLOCK_B, BLOCK_H), dtype=tl.float32)
    acc_g = tl.zeros((BLOCK_B, BLOCK_H), dtype=tl.float32)
    acc_o = tl.zeros((BLOCK_B, BLOCK_H), dtype=tl.float32)
    for k0 in range(0, P, BLOCK_K):
        ks = k0 + tl.arange(0, BLOCK_K)
        h_ok = (rows[:, None] < B) & (ks[None, :] < P)
        h = tl.load(h_prev_ptr + rows[:, None] * P + ks[None, :], mask=h_ok, other=0.0)
        w_ok = (ks[:, None] < P) & (cols[None, :] < H)
        w_tile = w_ptr + ks[:, None] * G + cols[None, :]  # (BLOCK_K, BLOCK_H), gate i
        acc_i += _dot(h, tl.load(w_tile, mask=w_ok, other=0.0), FP32_DOT)
        acc_f += _dot(h, tl.load(w_tile + H, mask=w_ok, other=0.0), FP32_DOT)
        acc_g += _dot(h, tl.load(w_tile + 2 * H, mask=w_ok, other=0.0), FP32_DOT)
        acc_o += _dot(h, tl.load(w_tile + 3 * H, mask=w_ok, other=0.0), FP32_DOT)

    ok = (rows[:, None] < B) & (cols[None, :] < H)
    at_g = rows[:, None] * G + cols[None, :]  # gate i of these units in a (B, 4H) row
    at_h = rows[:, None] * H + cols[None, :]
    i_t = _sigmoid(acc_i + tl.load(xp_ptr + at_g, mask=ok, other=0.0).to(tl.float32))
    f_t = _sigmoid(acc_f + tl.load(xp_ptr + at_g + H, mask=ok, other=0.0).to(tl.float32))
    g_t = _tanh(acc_g + tl.load(xp_ptr + at_g + 2 * H, mask=ok, other=0.0).to(tl.float32))
    o_t = _sigmoid(acc_o + tl.load(xp_ptr + at_g + 3 * H, mask=ok, other=0.0).to(tl.float32))
    c_prev = tl.load(c_prev_ptr + at_h, mask=ok, other=0.0)
    c_t = f_t * c_prev + i_t * g_t
    h_t = o_t * _tanh(c_t)
    out_ty = gates_ptr.dtype.element_ty
    tl.store(gates_ptr + at_g, i_t.to(out_ty), mask=ok)
    tl.store(gates_ptr + at_g + H, f_t.to(out_ty), mask=ok)
    tl.store(gates_ptr + at_g + 2 * H, g_t.to(out_ty), mask=ok)
    tl.store(gates_ptr + at_g + 3 * H, o_t.to(out_ty), mask=ok)
    if HAS_MASK:
        real = _load_mask(mask_ptr, rows, B)  # (BLOCK_B, 1)
        c_t = real * c_t + (1.0 - real) * c_prev
        if not PROJECTED:  # P == H: carry h_{t-1} through padding (torch does it when projected)
            h_prev = tl.load(h_prev_ptr + at_h, mask=ok, other=0.0).to(tl.float32)
            h_t = real * h_t + (1.0 - real) * h_prev
    tl.store(c_out_ptr + at_h, c_t, mask=ok)
    tl.store(h_out_ptr + at_h, h_t.to(h_out_ptr.dtype.element_ty), mask=ok)


@triton.jit
def _lstm_fwd_persistent(
    xp_ptr,  # (T, B, 4H)  W_ih x + b, all steps
    h0_ptr,  # (B, H)
    c0_ptr,  # (B, H)  float32
    w_ptr,  # (H, 4H)  W_hhᵀ, contiguous
    mask_ptr,  # (T, B)  int8 (read only if HAS_MASK)
    h_all_ptr,  # (T, B, H)
    c_all_ptr,  # (T, B, H)  float32
    gates_ptr,  # (T, B, 4H)
    T,
    B,
    H,
    HAS_MASK: tl.constexpr,
    FP32_DOT: tl.constexpr,
    BLOCK_B: tl.constexpr,
    H_PAD: tl.constexpr,  # next power of two >= H (and >= 16)
):
    rows = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    units = tl.arange(0, H_PAD)
    G = 4 * H
    ok = (rows[:, None] < B) & (units[None, :] < H)
    # W_hhᵀ, loaded once and held on chip for the whole sequence: four (H_PAD, H_PAD) tiles.
    w_ok = (units[:, None] < H) & (units[None, :] < H)
    w_tile = w_ptr + units[:, None] * G + units[None, :]
    w_i = tl.load(w_tile, mask=w_ok, other=0.0)
    w_f = tl.load(w_tile + H, mask=w_ok, other=0.0)
    w_g = tl.load(w_tile + 2 * H, mask=w_ok, other=0.0)
    w_o = tl.load(w_tile + 3 * H, mask=w_ok, other=0.0)
    at_h = rows[:, None] * H + units[None, :]  # (BLOCK_B, H_PAD) in a (B, H) matrix
    at_g = rows[:, None] * G + units[None, :]
    h = tl.load(h0_ptr + at_h, mask=ok, other=0.0)  # input dtype: the GEMM operand, as stored
    c = tl.load(c0_ptr + at_h, mask=ok, other=0.0)  # float32
    out_ty = gates_ptr.dtype.element_ty
    for _ in range(T):  # the pointers below advance one step (B rows) per iteration
        i_t = _sigmoid(
            _dot(h, w_i, FP32_DOT) + tl.load(xp_ptr + at_g, mask=ok, other=0.0).to(tl.float32)
        )
        f_t = _sigmoid(
            _dot(h, w_f, FP32_DOT) + tl.load(xp_ptr + at_g + H, mask=ok, other=0.0).to(tl.float32)
        )
        g_t = _tanh(
            _dot(h, w_g, FP32_DOT)
            + tl.load(xp_ptr + at_g + 2 * H, mask=ok, other=0.0).to(tl.float32)
        )
        o_t = _sigmoid(
            _dot(h, w_o, FP32_DOT)
            + tl.load(xp_ptr + at_g + 3 * H, mask=ok, other=0.0).to(tl.float32)
        )
        tl.store(gates_ptr + at_g, i_t.to(out_ty), mask=ok)
        tl.store(gates_ptr + at_g + H, f_t.to(out_ty), mask=ok)
        tl.store(gates_ptr + at_g + 2 * H, g_t.to(out_ty), mask=ok)
        tl.store(gates_ptr + at_g + 3 * H, o_t.to(out_ty), mask=ok)
        c_new = f_t * c + i_t * g_t
        h_new = o_t * _tanh(c_new)
        if HAS_MASK:
            real = _load_mask(mask_ptr, rows, B)
            c_new = real * c_new + (1.0 - real) * c
            h_new = real * h_new + (1.0 - real) * h.to(tl.float32)
        c = c_new
        h = h_new.to(h_all_ptr.dtype.element_ty)  # rounded like the per-step design stores it
        tl.store(c_all_ptr + at_h, c, mask=ok)
        tl.store(h_all_ptr + at_h, h, mask=ok)
        xp_ptr += B * G
        gates_ptr += B * G
        c_all_ptr += B * H
        h_all_ptr += B * H
        mask_ptr += B


@triton.jit
def _lstm_bwd_step(
    dz_next_ptr,  # (B, 4H)  dL/dz_{t+1} (read unless LAST)
    w_ptr,  # (4H, H)  W_hh (read unless LAST or PROJECTED)
    dh_next_ptr,  # (B, H)  float32: total gradient at h_{t+1} (read if HAS_MASK and not LAST)
    mask_next_ptr,  # (B,)  mask[t+1]
    grad_h_ptr,  # (B, H)  dL/dh_all[t] from outside (read if HAS_GRAD_H)
    dh_ptr,  # (B, H)  float32 out: total gradient at h_t; in, already set, when PROJECTED
    dh_raw_ptr,  # (B, H)  float32: gradient at o ⊙ tanh C_t, from torch (read if PROJECTED)
    mask_ptr,  # (B,)  mask[t]
    dc_ptr,  # (B, H)  float32 in: gradient carried to C_t; out: the one carried to C_{t-1}
    grad_c_ptr,  # (B, H)  dL/dc_all[t] (read if HAS_GRAD_C)
    grad_gates_ptr,  # (B, 4H)  dL/dgates[t] (read if HAS_GRAD_GATES)
    gates_ptr,  # (B, 4H)  i, f, g, o at step t
    c_ptr,  # (B, H)  float32 C_t
    c_prev_ptr,  # (B, H)  float32 C_{t-1}
    dz_ptr,  # (B, 4H)  out: dL/dz_t, gradient at the pre-activations
    B,
    H,
    LAST: tl.constexpr,
    HAS_MASK: tl.constexpr,
    PROJECTED: tl.constexpr,
    HAS_GRAD_H: tl.constexpr,
    HAS_GRAD_C: tl.constexpr,
    HAS_GRAD_GATES: tl.constexpr,
    FP32_DOT: tl.constexpr,
    BLOCK_B: tl.constexpr,
    BLOCK_H: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    cols = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
    G = 4 * H
    ok = (rows[:, None] < B) & (cols[None, :] < H)
    at_h = rows[:, None] * H + cols[None, :]
    at_g = rows[:, None] * G + cols[None, :]
    real = tl.full((BLOCK_B, 1), 1.0, tl.float32)
    if HAS_MASK:
        real = _load_mask(mask_ptr, rows, B)

    if PROJECTED:  # torch has done dh_t and δh·W_hr
        dh_raw = tl.load(dh_raw_ptr + at_h, mask=ok, other=0.0)
    else:
        # The total gradient at h_t: from the output at t, through step t+1's gates
        # (dz_{t+1} · W_hh, the recurrent GEMM over K = 4H) and past step t+1 if it was padding.
        dh = _grad_arriving_at_h(
            grad_h_ptr, dz_next_ptr, w_ptr, rows, cols, ok, at_h, B, H, G,
            HAS_GRAD_H, LAST, FP32_DOT, BLOCK_B, BLOCK_H, BLOCK_K,
        )  # fmt: skip
        if not LAST:
            if HAS_MASK:
                skipped = 1.0 - _load_mask(mask_next_ptr, rows, B)
                dh += skipped * tl.load(dh_next_ptr + at_h, mask=ok, other=0.0)
        tl.store(dh_ptr + at_h, dh, mask=ok)
        dh_raw = real * dh

    dc = tl.load(dc_ptr + at_h, mask=ok, other=0.0)
    if HAS_GRAD_C:
        dc += tl.load(grad_c_ptr + at_h, mask=ok, other=0.0).to(tl.float32)
    dc_skip = (1.0 - real) * dc  # past a padding step the gradient goes to C_{t-1} untouched
    dc = real * dc
    i_t = tl.load(gates_ptr + at_g, mask=ok, other=0.0).to(tl.float32)
    f_t = tl.load(gates_ptr + at_g + H, mask=ok, other=0.0).to(tl.float32)
    g_t = tl.load(gates_ptr + at_g + 2 * H, mask=ok, other=0.0).to(tl.float32)
    o_t = tl.load(gates_ptr + at_g + 3 * H, mask=ok, other=0.0).to(tl.float32)
    tanh_c = _tanh(tl.load(c_ptr + at_h, mask=ok, other=0.0))
    c_prev = tl.load(c_prev_ptr + at_h, mask=ok, other=0.0)
    d_o = dh_raw * tanh_c
    dc += dh_raw * o_t * (1.0 - tanh_c * tanh_c)
    d_i = dc * g_t
    d_g = dc * i_t
    d_f = dc * c_prev
    if HAS_GRAD_GATES:
        d_i += tl.load(grad_gates_ptr + at_g, mask=ok, other=0.0).to(tl.float32)
        d_f += tl.load(grad_gates_ptr + at_g + H, mask=ok, other=0.0).to(tl.float32)
        d_g += tl.load(grad_gates_ptr + at_g + 2 * H, mask=ok, other=0.0).to(tl.float32)
        d_o += tl.load(grad_gates_ptr + at_g + 3 * H, mask=ok, other=0.0).to(tl.float32)
    out_ty = dz_ptr.dtype.element_ty
    tl.store(dz_ptr + at_g, (d_i * i_t * (1.0 - i_t)).to(out_ty), mask=ok)
    tl.store(dz_ptr + at_g + H, (d_f * f_t * (1.0 - f_t)).to(out_ty), mask=ok)
    tl.store(dz_ptr + at_g + 2 * H, (d_g * (1.0 - g_t * g_t)).to(out_ty), mask=ok)
    tl.store(dz_ptr + at_g + 3 * H, (d_o * o_t * (1.0 - o_t)).to(out_ty), mask=ok)
    tl.store(dc_ptr + at_h, dc * f_t + dc_skip, mask=ok)  # the forget gate is the Jacobian


# --------------------------------------------------------------------------------------------
# GRU kernels
# --------------------------------------------------------------------------------------------


@triton.jit
def _gru_fwd_step(
    gx_ptr,  # (B, 3H)  W_ih x_t + b_ih, this step
    h_prev_ptr,  # (B, H)
    w_ptr,  # (H, 3H)  W_hhᵀ, contiguous
    b_hh_ptr,  # (3H,)  (read if HAS_BIAS)
    mask_ptr,  # (B,)  int8 (read if HAS_MASK)
    h_out_ptr,  # (B, H)
    gates_ptr,  # (B, 3H)  r, z, n
    ghn_ptr,  # (B, H)  float32 out: W_hn h_{t-1} + b_hn, kept for the backward
    B,
    H,
    HAS_BIAS: tl.constexpr,
    HAS_MASK: tl.constexpr,
    FP32_DOT: tl.constexpr,
    BLOCK_B: tl.constexpr,
    BLOCK_H: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    cols = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
    G = 3 * H
    acc_r = tl.zeros((BLOCK_B, BLOCK_H), dtype=tl.float32)
    acc_z = tl.zeros((BLOCK_B, BLOCK_H), dtype=tl.float32)
    acc_n = tl.zeros((BLOCK_B, BLOCK_H), dtype=tl.float32)
    for k0 in range(0, H, BLOCK_K):
        ks = k0 + tl.arange(0, BLOCK_K)
        h_ok = (rows[:, None] < B) & (ks[None, :] < H)
        h = tl.load(h_prev_ptr + rows[:, None] * H + ks[None, :], mask=h_ok, other=0.0)
        w_ok = (ks[:, None] < H) & (cols[None, :] < H)
        w_tile = w_ptr + ks[:, None] * G + cols[None, :]
        acc_r += _dot(h, tl.load(w_tile, mask=w_ok, other=0.0), FP32_DOT)
        acc_z += _dot(h, tl.load(w_tile + H, mask=w_ok, other=0.0), FP32_DOT)
        acc_n += _dot(h, tl.load(w_tile + 2 * H, mask=w_ok, other=0.0), FP32_DOT)
    if HAS_BIAS:
        col_ok = cols < H
        acc_r += tl.load(b_hh_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)[None, :]
        acc_z += tl.load(b_hh_ptr + H + cols, mask=col_ok, other=0.0).to(tl.float32)[None, :]
        acc_n += tl.load(b_hh_ptr + 2 * H + cols, mask=col_ok, other=0.0).to(tl.float32)[None, :]

    ok = (rows[:, None] < B) & (cols[None, :] < H)
    at_g = rows[:, None] * G + cols[None, :]
    at_h = rows[:, None] * H + cols[None, :]
    r_t = _sigmoid(acc_r + tl.load(gx_ptr + at_g, mask=ok, other=0.0).to(tl.float32))
    z_t = _sigmoid(acc_z + tl.load(gx_ptr + at_g + H, mask=ok, other=0.0).to(tl.float32))
    n_t = _tanh(tl.load(gx_ptr + at_g + 2 * H, mask=ok, other=0.0).to(tl.float32) + r_t * acc_n)
    h_prev = tl.load(h_prev_ptr + at_h, mask=ok, other=0.0).to(tl.float32)
    h_t = (1.0 - z_t) * n_t + z_t * h_prev
    if HAS_MASK:
        real = _load_mask(mask_ptr, rows, B)
        h_t = real * h_t + (1.0 - real) * h_prev
    out_ty = gates_ptr.dtype.element_ty
    tl.store(gates_ptr + at_g, r_t.to(out_ty), mask=ok)
    tl.store(gates_ptr + at_g + H, z_t.to(out_ty), mask=ok)
    tl.store(gates_ptr + at_g + 2 * H, n_t.to(out_ty), mask=ok)
    tl.store(ghn_ptr + at_h, acc_n, mask=ok)
    tl.store(h_out_ptr + at_h, h_t.to(h_out_ptr.dtype.element_ty), mask=ok)


@triton.jit
def _gru_bwd_step(
    dgh_next_ptr,  # (B, 3H)  gradient at W_hh h_t + b_hh, from step t+1 (read unless LAST)
    w_ptr,  # (3H, H)  W_hh
    dh_next_ptr,  # (B, H)  float32 total gradient at h_{t+1} (read unless LAST)
    gates_next_ptr,  # (B, 3H)  r, z, n at step t+1 (z read unless LAST)
    mask_next_ptr,  # (B,)  mask[t+1]
    grad_h_ptr,  # (B, H)  dL/dh_all[t] (read if HAS_GRAD_H)
    mask_ptr,  # (B,)  mask[t]
    h_prev_ptr,  # (B, H)  h_{t-1}
    gates_ptr,  # (B, 3H)  r, z, n at step t
    ghn_ptr,  # (B, H)  float32 W_hn h_{t-1} + b_hn
    grad_gates_ptr,  # (B, 3H)  dL/dgates[t] (read if HAS_GRAD_GATES)
    dh_ptr,  # (B, H)  float32 out: total gradient at h_t
    dgx_ptr,  # (B, 3H)  out: gradient at W_ih x_t + b_ih
    dgh_ptr,  # (B, 3H)  out: gradient at W_hh h_{t-1} + b_hh
    B,
    H,
    LAST: tl.constexpr,
    HAS_MASK: tl.constexpr,
    HAS_GRAD_H: tl.constexpr,
    HAS_GRAD_GATES: tl.constexpr,
    FP32_DOT: tl.constexpr,
    BLOCK_B: tl.constexpr,
    BLOCK_H: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    cols = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
    G = 3 * H
    ok = (rows[:, None] < B) & (cols[None, :] < H)
    at_h = rows[:, None] * H + cols[None, :]
    at_g = rows[:, None] * G + cols[None, :]

    # Total gradient at h_t: output at t, + step t+1's gates (d_gh · W_hh, K = 3H), + the direct
    # path h_{t+1} = ... + z ⊙ h_t (or the whole gradient, where step t+1 was padding).
    dh = _grad_arriving_at_h(
        grad_h_ptr, dgh_next_ptr, w_ptr, rows, cols, ok, at_h, B, H, G,
        HAS_GRAD_H, LAST, FP32_DOT, BLOCK_B, BLOCK_H, BLOCK_K,
    )  # fmt: skip
    if not LAST:
        z_next = tl.load(gates_next_ptr + at_g + H, mask=ok, other=0.0).to(tl.float32)
        through = z_next
        if HAS_MASK:
            real_next = _load_mask(mask_next_ptr, rows, B)
            through = real_next * z_next + (1.0 - real_next)
        dh += through * tl.load(dh_next_ptr + at_h, mask=ok, other=0.0)
    tl.store(dh_ptr + at_h, dh, mask=ok)
    if HAS_MASK:
        dh = _load_mask(mask_ptr, rows, B) * dh

    r_t = tl.load(gates_ptr + at_g, mask=ok, other=0.0).to(tl.float32)
    z_t = tl.load(gates_ptr + at_g + H, mask=ok, other=0.0).to(tl.float32)
    n_t = tl.load(gates_ptr + at_g + 2 * H, mask=ok, other=0.0).to(tl.float32)
    h_prev = tl.load(h_prev_ptr + at_h, mask=ok, other=0.0).to(tl.float32)
    d_n = dh * (1.0 - z_t)
    d_z = dh * (h_prev - n_t)
    if HAS_GRAD_GATES:
        d_z += tl.load(grad_gates_ptr + at_g + H, mask=ok, other=0.0).to(tl.float32)
        d_n += tl.load(grad_gates_ptr + at_g + 2 * H, mask=ok, other=0.0).to(tl.float32)
    d_n_pre = d_n * (1.0 - n_t * n_t)
    d_r = d_n_pre * tl.load(ghn_ptr + at_h, mask=ok, other=0.0)
    if HAS_GRAD_GATES:
        d_r += tl.load(grad_gates_ptr + at_g, mask=ok, other=0.0).to(tl.float32)
    d_r_pre = d_r * r_t * (1.0 - r_t)
    d_z_pre = d_z * z_t * (1.0 - z_t)
    out_ty = dgx_ptr.dtype.element_ty
    tl.store(dgx_ptr + at_g, d_r_pre.to(out_ty), mask=ok)
    tl.store(dgx_ptr + at_g + H, d_z_pre.to(out_ty), mask=ok)
    tl.store(dgx_ptr + at_g + 2 * H, d_n_pre.to(out_ty), mask=ok)
    tl.store(dgh_ptr + at_g, d_r_pre.to(out_ty), mask=ok)
    tl.store(dgh_ptr + at_g + H, d_z_pre.to(out_ty), mask=ok)
    tl.store(dgh_ptr + at_g + 2 * H, (d_n_pre * r_t).to(out_ty), mask=ok)


# --------------------------------------------------------------------------------------------
# Plain RNN kernels
# --------------------------------------------------------------------------------------------


@triton.jit
def _rnn_fwd_step(
    xp_ptr,  # (B, H)  W_ih x_t + b, this step
    h_prev_ptr,  # (B, H)
    w_ptr,  # (H, H)  W_hhᵀ, contiguous
    mask_ptr,  # (B,)  int8 (read if HAS_MASK)
    h_out_ptr,  # (B, H)
    B,
    H,
    RELU: tl.constexpr,
    HAS_MASK: tl.constexpr,
    FP32_DOT: tl.constexpr,
    BLOCK_B: tl.constexpr,
    BLOCK_H: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    cols = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
    acc = tl.zeros((BLOCK_B, BLOCK_H), dtype=tl.float32)
    for k0 in range(0, H, BLOCK_K):
        ks = k0 + tl.arange(0, BLOCK_K)
        h_ok = (rows[:, None] < B) & (ks[None, :] < H)
        h = tl.load(h_prev_ptr + rows[:, None] * H + ks[None, :], mask=h_ok, other=0.0)
        w_ok = (ks[:, None] < H) & (cols[None, :] < H)
        w = tl.load(w_ptr + ks[:, None] * H + cols[None, :], mask=w_ok, other=0.0)
        acc += _dot(h, w, FP32_DOT)
    ok = (rows[:, None] < B) & (cols[None, :] < H)
    at_h = rows[:, None] * H + cols[None, :]
    pre = acc + tl.load(xp_ptr + at_h, mask=ok, other=0.0).to(tl.float32)
    if RELU:
        h_t = tl.maximum(pre, 0.0)
    else:
        h_t = _tanh(pre)
    if HAS_MASK:
        real = _load_mask(mask_ptr, rows, B)
        h_prev = tl.load(h_prev_ptr + at_h, mask=ok, other=0.0).to(tl.float32)
        h_t = real * h_t + (1.0 - real) * h_prev
    tl.store(h_out_ptr + at_h, h_t.to(h_out_ptr.dtype.element_ty), mask=ok)


@triton.jit
def _rnn_bwd_step(
    dpre_next_ptr,  # (B, H)  gradient at step t+1's pre-activation (read unless LAST)
    w_ptr,  # (H, H)  W_hh
    dh_next_ptr,  # (B, H)  float32 total gradient at h_{t+1} (read if HAS_MASK, not LAST)
    mask_next_ptr,  # (B,)
    grad_h_ptr,  # (B, H)  (read if HAS_GRAD_H)
    mask_ptr,  # (B,)
    h_ptr,  # (B, H)  h_t, whose activation derivative we need
    dh_ptr,  # (B, H)  float32 out: total gradient at h_t
    dpre_ptr,  # (B, H)  out: gradient at step t's pre-activation
    B,
    H,
    LAST: tl.constexpr,
    RELU: tl.constexpr,
    HAS_MASK: tl.constexpr,
    HAS_GRAD_H: tl.constexpr,
    FP32_DOT: tl.constexpr,
    BLOCK_B: tl.constexpr,
    BLOCK_H: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    cols = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
    ok = (rows[:, None] < B) & (cols[None, :] < H)
    at_h = rows[:, None] * H + cols[None, :]
    dh = _grad_arriving_at_h(
        grad_h_ptr, dpre_next_ptr, w_ptr, rows, cols, ok, at_h, B, H, H,
        HAS_GRAD_H, LAST, FP32_DOT, BLOCK_B, BLOCK_H, BLOCK_K,
    )  # fmt: skip
    if not LAST:
        if HAS_MASK:
            skipped = 1.0 - _load_mask(mask_next_ptr, rows, B)
            dh += skipped * tl.load(dh_next_ptr + at_h, mask=ok, other=0.0)
    tl.store(dh_ptr + at_h, dh, mask=ok)
    if HAS_MASK:
        dh = _load_mask(mask_ptr, rows, B) * dh
    h_t = tl.load(h_ptr + at_h, mask=ok, other=0.0).to(tl.float32)
    if RELU:
        d_act = (h_t > 0).to(tl.float32)
    else:
        d_act = 1.0 - h_t * h_t  # tanh'(z) = 1 - tanh(z)^2
    tl.store(dpre_ptr + at_h, (dh * d_act).to(dpre_ptr.dtype.element_ty), mask=ok)


# --------------------------------------------------------------------------------------------
# Host side: the step loops
# --------------------------------------------------------------------------------------------


def _mask_int8(mask: Tensor | None, T: int, B: int) -> Tensor | None:
    """``(T, B, 1)`` bool -> ``(T, B)`` int8 (1 = real step), or None."""
    return None if mask is None else mask.reshape(T, B).to(torch.int8).contiguous()


def _fp32_dot(dtype: torch.dtype) -> bool:
    return dtype == torch.float32 or _INTERPRETED


def _grid(B: int, H: int) -> tuple[int, int]:
    return (triton.cdiv(B, _block_b(B)), triton.cdiv(H, config.block_h))


def _blocks(B: int) -> dict[str, int]:
    return dict(
        BLOCK_B=_block_b(B),
        BLOCK_H=config.block_h,
        BLOCK_K=config.block_k,
        num_warps=config.num_warps,
    )


def _project_inputs(x: Tensor, weight_ih: Tensor, bias: Tensor | None) -> Tensor:
    """``x·W_ihᵀ + b`` for all ``T·B`` rows as one GEMM, kept in float32: ``(T, B, I) -> (T, B, G)``.

    For bfloat16 the product still runs in bfloat16 (on a GPU, tensor cores with a float32
    result); keeping the result in float32 spares the pre-activations one bfloat16 rounding, the
    largest error of the step otherwise.
    """
    if x.dtype == torch.float32:
        return input_projection(x, weight_ih, bias).contiguous()
    T, B, I = x.shape
    x2 = x.reshape(T * B, I)
    out = None
    if x.is_cuda:
        try:
            out = torch.mm(x2, weight_ih.T, out_dtype=torch.float32)
        except (TypeError, RuntimeError, NotImplementedError):  # a torch without out_dtype
            out = None
    if out is None:
        out = x2.float() @ weight_ih.float().T
    if bias is not None:
        out += bias.float()
    return out.reshape(T, B, weight_ih.shape[0])


def _weight_grads(
    d_pre: Tensor,  # (T, B, G) gradient at the pre-activations
    x: Tensor,  # (T, B, I)
    h_prev: Tensor,  # (T, B, P) state entering each step
    weight_ih: Tensor | None,  # (G, I), or None when dx is not wanted
    want_w_ih: bool,
    want_w_hh: bool,
    want_bias: bool,
) -> tuple[Tensor | None, Tensor | None, Tensor | None, Tensor | None]:
    """The big GEMMs after the loop, over all ``T·B`` rows: ``(dX, dW_ih, dW_hh, db)``."""
    T, B, G = d_pre.shape
    d2 = d_pre.reshape(T * B, G)
    dx = None if weight_ih is None else (d2 @ weight_ih.to(d2.dtype)).reshape(x.shape)
    dw_ih = d2.T @ x.reshape(T * B, -1).to(d2.dtype) if want_w_ih else None
    dw_hh = d2.T @ h_prev.reshape(T * B, -1).to(d2.dtype) if want_w_hh else None
    db = d2.sum(0) if want_bias else None
    return dx, dw_ih, dw_hh, db


def _shift_in(first: Tensor, seq: Tensor) -> Tensor:
    """``[first, seq[0], ..., seq[T-2]]``: the state entering each step, ``(T, B, ·)``."""
    return torch.cat([first.unsqueeze(0).to(seq.dtype), seq[:-1]], dim=0)


def _lstm_forward(x, h0, c0, weight_ih, weight_hh, bias, weight_hr, mask):
    """Runs the forward; returns ``(h_all, c_all float32, gates, h_raw or None)``."""
    T, B, _ = x.shape
    H = weight_hh.shape[0] // 4
    P = weight_hh.shape[1]
    projected = weight_hr is not None
    xp = _project_inputs(x, weight_ih, bias)  # (T, B, 4H)
    w_t = weight_hh.t().contiguous()  # (P, 4H)
    mask8 = _mask_int8(mask, T, B)
    h_all = x.new_empty(T, B, P)
    c_all = torch.empty(T, B, H, dtype=torch.float32, device=x.device)
    gates = torch.empty(T, B, 4 * H, dtype=torch.float32, device=x.device)
    h0 = h0.to(x.dtype).contiguous()  # (B, P)
    c0 = c0.to(torch.float32).contiguous()  # (B, H)
    fp32_dot = _fp32_dot(x.dtype)

    if choose_design(B, H, projected) == "persistent":
        block_b = _block_b(B)
        _lstm_fwd_persistent[(triton.cdiv(B, block_b),)](
            xp, h0, c0, w_t, c_all if mask8 is None else mask8, h_all, c_all, gates, T, B, H,
            HAS_MASK=mask8 is not None, FP32_DOT=fp32_dot, BLOCK_B=block_b,
            H_PAD=_pow2_at_least_16(H), num_warps=config.persistent_num_warps,
        )  # fmt: skip
        return h_all, c_all, gates, None

    h_raw = torch.empty(T, B, H, dtype=x.dtype, device=x.device) if projected else None
    h_prev, c_prev = h0, c0
    grid = _grid(B, H)
    for t in range(T):
        _lstm_fwd_step[grid](
            xp[t], h_prev, c_prev, w_t, c_prev if mask8 is None else mask8[t],
            h_raw[t] if projected else h_all[t], c_all[t], gates[t], B, H, P,
            HAS_MASK=mask8 is not None, PROJECTED=projected, FP32_DOT=fp32_dot, **_blocks(B),
        )  # fmt: skip
        if projected:  # LSTMP: h_t = W_hr (o ⊙ tanh C_t), carried through padding, in torch
            h_new = h_raw[t] @ weight_hr.T  # (B, P)
            h_all[t] = h_new if mask is None else torch.where(mask[t], h_new, h_prev)
        h_prev, c_prev = h_all[t], c_all[t]
    return h_all, c_all, gates, h_raw


def _lstm_backward(saved, grad_h_all, grad_c_all, grad_gates, need):
    x, h0, c0, weight_ih, weight_hh, weight_hr, mask, h_all, c_all, gates, h_raw = saved
    T, B, _ = x.shape
    H = weight_hh.shape[0] // 4
    P = weight_hh.shape[1]
    projected = weight_hr is not None
    mask8 = _mask_int8(mask, T, B)
    f32 = dict(dtype=torch.float32, device=x.device)
    c_prev_all = torch.cat([c0.to(torch.float32).unsqueeze(0), c_all[:-1]])  # (T, B, H)
    d_pre = x.new_empty(T, B, 4 * H)  # dL/dz for every step
    dh_all = torch.empty(T, B, P, **f32)  # total gradient at each h_t
    dc = torch.zeros(B, H, **f32)  # carried to C_t; the kernel updates it in place
    dh_raw = torch.empty(B, H, **f32) if projected else None
    grad_h_all = None if grad_h_all is None else grad_h_all.contiguous()
    grad_c_all = None if grad_c_all is None else grad_c_all.contiguous()
    grad_gates = None if grad_gates is None else grad_gates.contiguous()
    grid = _grid(B, H)
    for t in range(T - 1, -1, -1):
        last = t == T - 1
        nxt = t if last else t + 1  # any valid slice where step t+1 is not read
        if projected:  # dh_t and δh·W_hr in torch (see the module docstring)
            dh = torch.zeros(B, P, **f32) if grad_h_all is None else grad_h_all[t].float()
            if not last:
                dh = dh + d_pre[t + 1].float() @ weight_hh.float()
                if mask is not None:
                    dh = dh + (~mask[t + 1]) * dh_all[t + 1]
            dh_all[t] = dh
            real_dh = dh if mask is None else mask[t] * dh
            torch.matmul(real_dh, weight_hr.float(), out=dh_raw)  # (B, H)
        _lstm_bwd_step[grid](
            d_pre[nxt], weight_hh, dh_all[nxt], dc if mask8 is None else mask8[nxt],
            dc if grad_h_all is None else grad_h_all[t], dh_all[t], dc if dh_raw is None else dh_raw,
            dc if mask8 is None else mask8[t], dc, dc if grad_c_all is None else grad_c_all[t],
            dc if grad_gates is None else grad_gates[t], gates[t], c_all[t], c_prev_all[t],
            d_pre[t], B, H,
            LAST=last, HAS_MASK=mask8 is not None, PROJECTED=projected,
            HAS_GRAD_H=grad_h_all is not None, HAS_GRAD_C=grad_c_all is not None,
            HAS_GRAD_GATES=grad_gates is not None, FP32_DOT=_fp32_dot(x.dtype), **_blocks(B),
        )  # fmt: skip

    # What flows out of step 0 into the initial state: through its gates, or past it if padding.
    dh0 = d_pre[0].float() @ weight_hh.float()  # (B, P)
    if mask is not None:
        dh0 = dh0 + (~mask[0]) * dh_all[0]
    # need: (x, h0, c0, W_ih, W_hh, b, W_hr, mask)
    dx, dw_ih, dw_hh, db = _weight_grads(
        d_pre, x, _shift_in(h0, h_all), weight_ih if need[0] else None, need[3], need[4], need[5]
    )
    dw_hr = None
    if projected and need[6]:
        dh_real = dh_all if mask is None else dh_all * mask  # (T, B, P)
        dw_hr = dh_real.reshape(T * B, P).T @ h_raw.reshape(T * B, H).float()  # (P, H)
    return (
        dx,
        dh0.to(h0.dtype),
        dc.to(c0.dtype),
        dw_ih,
        dw_hh,
        db,
        None if dw_hr is None else dw_hr.to(weight_hr.dtype),
        None,
    )


class _LSTMFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, h0, c0, weight_ih, weight_hh, bias, weight_hr, mask):
        h_all, c_all, gates, h_raw = _lstm_forward(
            x, h0, c0, weight_ih, weight_hh, bias, weight_hr, mask
        )
        ctx.save_for_backward(
            x, h0, c0, weight_ih, weight_hh, weight_hr, mask, h_all, c_all, gates, h_raw
        )
        ctx.set_materialize_grads(False)
        return h_all, c_all.to(x.dtype), gates.to(x.dtype)  # no copy for float32

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_h_all, grad_c_all, grad_gates):
        return _lstm_backward(
            ctx.saved_tensors, grad_h_all, grad_c_all, grad_gates, ctx.needs_input_grad
        )


def _gru_forward(x, h0, weight_ih, weight_hh, bias_ih, bias_hh, mask):
    T, B, _ = x.shape
    H = weight_hh.shape[1]
    gx = _project_inputs(x, weight_ih, bias_ih)  # (T, B, 3H)
    w_t = weight_hh.t().contiguous()  # (H, 3H)
    mask8 = _mask_int8(mask, T, B)
    h_all = x.new_empty(T, B, H)
    gates = torch.empty(T, B, 3 * H, dtype=torch.float32, device=x.device)
    ghn_all = torch.empty(T, B, H, dtype=torch.float32, device=x.device)
    h_prev = h0.to(x.dtype).contiguous()
    grid = _grid(B, H)
    for t in range(T):
        _gru_fwd_step[grid](
            gx[t], h_prev, w_t, w_t if bias_hh is None else bias_hh,
            w_t if mask8 is None else mask8[t], h_all[t], gates[t], ghn_all[t], B, H,
            HAS_BIAS=bias_hh is not None, HAS_MASK=mask8 is not None,
            FP32_DOT=_fp32_dot(x.dtype), **_blocks(B),
        )  # fmt: skip
        h_prev = h_all[t]
    return h_all, gates, ghn_all


class _GRUFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, h0, weight_ih, weight_hh, bias_ih, bias_hh, mask):
        h_all, gates, ghn_all = _gru_forward(x, h0, weight_ih, weight_hh, bias_ih, bias_hh, mask)
        ctx.save_for_backward(x, h0, weight_ih, weight_hh, mask, h_all, gates, ghn_all)
        ctx.set_materialize_grads(False)
        return h_all, gates.to(x.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_h_all, grad_gates):
        x, h0, weight_ih, weight_hh, mask, h_all, gates, ghn_all = ctx.saved_tensors
        need = ctx.needs_input_grad  # (x, h0, W_ih, W_hh, b_ih, b_hh, mask)
        T, B, _ = x.shape
        H = weight_hh.shape[1]
        mask8 = _mask_int8(mask, T, B)
        h_prev_all = _shift_in(h0, h_all)  # (T, B, H)
        d_gx = x.new_empty(T, B, 3 * H)
        d_gh = x.new_empty(T, B, 3 * H)
        dh_all = torch.empty(T, B, H, dtype=torch.float32, device=x.device)
        grad_h_all = None if grad_h_all is None else grad_h_all.contiguous()
        grad_gates = None if grad_gates is None else grad_gates.contiguous()
        grid = _grid(B, H)
        for t in range(T - 1, -1, -1):
            nxt = t if t == T - 1 else t + 1
            _gru_bwd_step[grid](
                d_gh[nxt], weight_hh, dh_all[nxt], gates[nxt],
                dh_all if mask8 is None else mask8[nxt],
                dh_all if grad_h_all is None else grad_h_all[t],
                dh_all if mask8 is None else mask8[t], h_prev_all[t], gates[t], ghn_all[t],
                dh_all if grad_gates is None else grad_gates[t], dh_all[t], d_gx[t], d_gh[t],
                B, H,
                LAST=t == T - 1, HAS_MASK=mask8 is not None, HAS_GRAD_H=grad_h_all is not None,
                HAS_GRAD_GATES=grad_gates is not None, FP32_DOT=_fp32_dot(x.dtype), **_blocks(B),
            )  # fmt: skip
        # Into h0: through step 0's gates and its direct path z ⊙ h0 (all of it, if padding).
        through = gates[0, :, H : 2 * H].float()  # z_0
        if mask is not None:
            through = torch.where(mask[0], through, torch.ones_like(through))
        dh0 = d_gh[0].float() @ weight_hh.float() + through * dh_all[0]
        dx, dw_ih, _, db_ih = _weight_grads(
            d_gx, x, h_prev_all, weight_ih if need[0] else None, need[2], False, need[4]
        )
        _, _, dw_hh, db_hh = _weight_grads(d_gh, x, h_prev_all, None, False, need[3], need[5])
        return dx, dh0.to(h0.dtype), dw_ih, dw_hh, db_ih, db_hh, None


def _rnn_forward(x, h0, weight_ih, weight_hh, bias, mask, nonlinearity):
    T, B, _ = x.shape
    H = weight_hh.shape[0]
    xp = _project_inputs(x, weight_ih, bias)  # (T, B, H)
    w_t = weight_hh.t().contiguous()  # (H, H)
    mask8 = _mask_int8(mask, T, B)
    h_all = x.new_empty(T, B, H)
    h_prev = h0.to(x.dtype).contiguous()
    grid = _grid(B, H)
    for t in range(T):
        _rnn_fwd_step[grid](
            xp[t], h_prev, w_t, w_t if mask8 is None else mask8[t], h_all[t], B, H,
            RELU=nonlinearity == "relu", HAS_MASK=mask8 is not None,
            FP32_DOT=_fp32_dot(x.dtype), **_blocks(B),
        )  # fmt: skip
        h_prev = h_all[t]
    return h_all


class _RNNFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, h0, weight_ih, weight_hh, bias, mask, nonlinearity):
        h_all = _rnn_forward(x, h0, weight_ih, weight_hh, bias, mask, nonlinearity)
        ctx.save_for_backward(x, h0, weight_ih, weight_hh, mask, h_all)
        ctx.nonlinearity = nonlinearity
        ctx.set_materialize_grads(False)
        return h_all

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_h_all):
        x, h0, weight_ih, weight_hh, mask, h_all = ctx.saved_tensors
        need = ctx.needs_input_grad  # (x, h0, W_ih, W_hh, b, mask, nonlinearity)
        T, B, _ = x.shape
        H = weight_hh.shape[0]
        mask8 = _mask_int8(mask, T, B)
        d_pre = x.new_empty(T, B, H)
        dh_all = torch.empty(T, B, H, dtype=torch.float32, device=x.device)
        grad_h_all = None if grad_h_all is None else grad_h_all.contiguous()
        grid = _grid(B, H)
        for t in range(T - 1, -1, -1):
            nxt = t if t == T - 1 else t + 1
            _rnn_bwd_step[grid](
                d_pre[nxt], weight_hh, dh_all[nxt], dh_all if mask8 is None else mask8[nxt],
                dh_all if grad_h_all is None else grad_h_all[t],
                dh_all if mask8 is None else mask8[t], h_all[t], dh_all[t], d_pre[t], B, H,
                LAST=t == T - 1, RELU=ctx.nonlinearity == "relu", HAS_MASK=mask8 is not None,
                HAS_GRAD_H=grad_h_all is not None, FP32_DOT=_fp32_dot(x.dtype), **_blocks(B),
            )  # fmt: skip
        dh0 = d_pre[0].float() @ weight_hh.float()
        if mask is not None:
            dh0 = dh0 + (~mask[0]) * dh_all[0]
        dx, dw_ih, dw_hh, db = _weight_grads(
            d_pre, x, _shift_in(h0, h_all), weight_ih if need[0] else None, need[2], need[3],
            need[4],
        )  # fmt: skip
        return dx, dh0.to(h0.dtype), dw_ih, dw_hh, db, None, None


# --------------------------------------------------------------------------------------------
# The backend's three functions (signatures of lstm.kernels.reference)
# --------------------------------------------------------------------------------------------


def _check(x: Tensor, weights: dict[str, Tensor | None]) -> None:
    if x.dtype not in SUPPORTED_DTYPES:
        raise TypeError(f"the triton backend runs float32 and bfloat16, got x of {x.dtype}")
    for name, w in weights.items():
        if w is not None and (w.dtype != x.dtype or w.device != x.device):
            raise TypeError(
                f"{name} is {w.dtype} on {w.device} but x is {x.dtype} on {x.device}: "
                "the triton backend wants one dtype and device"
            )


def lstm(
    x: Tensor,  # (T, B, I)
    h0: Tensor,  # (B, P)
    c0: Tensor,  # (B, H)
    weight_ih: Tensor,  # (4H, I)
    weight_hh: Tensor,  # (4H, P)
    bias: Tensor | None,  # (4H,)  b_ih + b_hh
    weight_hr: Tensor | None = None,  # (P, H)
    mask: Tensor | None = None,  # (T, B, 1) bool
) -> tuple[Tensor, Tensor, Tensor]:
    """LSTM over a sequence: ``(h_all (T, B, P), c_all (T, B, H), gates (T, B, 4H))``, as
    :func:`lstm.kernels.reference.lstm_loop`, with the hand-written backward."""
    _check(x, dict(weight_ih=weight_ih, weight_hh=weight_hh, bias=bias, weight_hr=weight_hr))
    if x.shape[1] == 0:  # an empty batch launches nothing: the reference handles it
        return bptt.lstm_sequence(x, h0, c0, weight_ih, weight_hh, bias, weight_hr, mask)
    return _LSTMFunction.apply(x, h0, c0, weight_ih, weight_hh, bias, weight_hr, mask)


def gru(
    x: Tensor,  # (T, B, I)
    h0: Tensor,  # (B, H)
    weight_ih: Tensor,  # (3H, I)
    weight_hh: Tensor,  # (3H, H)
    bias_ih: Tensor | None,  # (3H,)
    bias_hh: Tensor | None,  # (3H,)
    mask: Tensor | None = None,  # (T, B, 1) bool
) -> tuple[Tensor, Tensor]:
    """GRU over a sequence: ``(h_all (T, B, H), gates (T, B, 3H))``, as
    :func:`lstm.kernels.reference.gru_loop`, with the hand-written backward."""
    _check(x, dict(weight_ih=weight_ih, weight_hh=weight_hh, bias_ih=bias_ih, bias_hh=bias_hh))
    if x.shape[1] == 0:
        return bptt.gru_sequence(x, h0, weight_ih, weight_hh, bias_ih, bias_hh, mask)
    return _GRUFunction.apply(x, h0, weight_ih, weight_hh, bias_ih, bias_hh, mask)


def rnn(
    x: Tensor,  # (T, B, I)
    h0: Tensor,  # (B, H)
    weight_ih: Tensor,  # (H, I)
    weight_hh: Tensor,  # (H, H)
    bias: Tensor | None,  # (H,)  b_ih + b_hh
    mask: Tensor | None = None,  # (T, B, 1) bool
    nonlinearity: str = "tanh",
) -> Tensor:
    """Plain RNN over a sequence: ``h_all (T, B, H)``, as :func:`lstm.kernels.reference.rnn_loop`,
    with the hand-written backward."""
    if nonlinearity not in ("tanh", "relu"):
        raise ValueError(f"nonlinearity should be 'tanh' or 'relu', got {nonlinearity!r}")
    _check(x, dict(weight_ih=weight_ih, weight_hh=weight_hh, bias=bias))
    if x.shape[1] == 0:
        return bptt.rnn_sequence(x, h0, weight_ih, weight_hh, bias, mask, nonlinearity)
    return _RNNFunction.apply(x, h0, weight_ih, weight_hh, bias, mask, nonlinearity)
