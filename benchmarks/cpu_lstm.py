"""Is the fused CPU backend faster than the peers? LSTM and GRU, inference and training, plus the
latency of one streaming step; every peer measured in the same run, in interleaved rounds.

Peers: torch.nn.LSTM/GRU (oneDNN, torch's default), ONNX Runtime (inference; thread spinning off),
JAX (a jitted lax.scan, only if jax is installed), and our own reference path (backend="bptt").

    python -m benchmarks.cpu_lstm --quick     # a reduced grid, a few minutes on 2 busy cores
    python -m benchmarks.cpu_lstm             # full grid: T {100,1000}, B {1,16,64}, H {64,256,512}

Prints a table per section, writes benchmarks/results/cpu_lstm[_quick].json (and .md), never
asserts a time. Ratios are peer time / our time: above 1 means we are faster.
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import time

import numpy as np
import torch

import lstm
from benchmarks.common import (
    RESULTS,
    interleaved,
    machine,
    markdown_table,
    print_table,
    sgemm_gflops,
    write_json,
)
from lstm.kernels import cpu as cpu_kernels

# --------------------------------------------------------------------------------------------
# ONNX Runtime: the LSTM/GRU operators built straight from torch's weights
# --------------------------------------------------------------------------------------------


def _onnx_model(module: torch.nn.RNNBase) -> bytes:
    """A one-layer unidirectional LSTM or GRU as a single ONNX operator with torch's weights.
    ONNX orders LSTM gates (i, o, f, c) and GRU gates (z, r, h); torch (i, f, g, o) and (r, z, n).
    GRU needs linear_before_reset=1 to be torch's GRU."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    H, I = module.hidden_size, module.input_size
    is_lstm = module.mode == "LSTM"
    order = [0, 3, 1, 2] if is_lstm else [1, 0, 2]
    blocks = lambda w: torch.cat([w.chunk(len(order))[k] for k in order]).detach().numpy()  # noqa: E731
    W = blocks(module.weight_ih_l0)[None]
    R = blocks(module.weight_hh_l0)[None]
    B = np.concatenate([blocks(module.bias_ih_l0), blocks(module.bias_hh_l0)])[None]
    inits = [
        numpy_helper.from_array(a.astype(np.float32), n) for a, n in ((W, "W"), (R, "R"), (B, "B"))
    ]
    inputs = [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["T", "N", I]),
              helper.make_tensor_value_info("h0", TensorProto.FLOAT, [1, "N", H])]  # fmt: skip
    outputs = [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["T", 1, "N", H]),
               helper.make_tensor_value_info("hT", TensorProto.FLOAT, [1, "N", H])]  # fmt: skip
    if is_lstm:
        inputs.append(helper.make_tensor_value_info("c0", TensorProto.FLOAT, [1, "N", H]))
        outputs.append(helper.make_tensor_value_info("cT", TensorProto.FLOAT, [1, "N", H]))
        node = helper.make_node("LSTM", ["X", "W", "R", "B", "", "h0", "c0"], ["Y", "hT", "cT"],
                                hidden_size=H)  # fmt: skip
    else:
        node = helper.make_node("GRU", ["X", "W", "R", "B", "", "h0"], ["Y", "hT"],
                                hidden_size=H, linear_before_reset=1)  # fmt: skip
    graph = helper.make_graph([node], "rnn", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    onnx.checker.check_model(model)
    return model.SerializeToString()


def _ort_session(module: torch.nn.RNNBase):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.inter_op_num_threads = 1
    # Spinning threads would steal the cores from whatever runs beside them (the other peers).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return ort.InferenceSession(_onnx_model(module), options, providers=["CPUExecutionProvider"])


def _have(name: str) -> bool:
    try:
        __import__(name)
        return True
    except ImportError:
        return False


# --------------------------------------------------------------------------------------------
# JAX (optional): a jitted lax.scan with torch's weights
# --------------------------------------------------------------------------------------------


def _jax_fns(module: torch.nn.RNNBase, x: torch.Tensor):
    """(inference, training) closures for JAX, or None where jax is not installed."""
    if module.mode != "LSTM" or not _have("jax"):
        return None
    import jax
    import jax.numpy as jnp

    jax.config.update("jax_cpu_enable_async_dispatch", False)
    params = {k: jnp.asarray(v.detach().numpy()) for k, v in module.named_parameters()}
    xj = jnp.asarray(x.numpy())
    B, H = x.shape[1], module.hidden_size

    def run(p, xs):
        xp = xs @ p["weight_ih_l0"].T + p["bias_ih_l0"] + p["bias_hh_l0"]

        def step(carry, z_x):
            h, c = carry
            z = z_x + h @ p["weight_hh_l0"].T
            i, f, g, o = jnp.split(z, 4, axis=-1)
            c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
            h = jax.nn.sigmoid(o) * jnp.tanh(c)
            return (h, c), h

        zeros = jnp.zeros((B, H), xs.dtype)
        return jax.lax.scan(step, (zeros, zeros), xp)[1]

    infer = jax.jit(run)
    train = jax.jit(jax.grad(lambda p, xs: run(p, xs).sum()))
    return (lambda: infer(params, xj).block_until_ready(),
            lambda: jax.tree_util.tree_map(lambda a: a.block_until_ready(), train(params, xj)))  # fmt: skip


# --------------------------------------------------------------------------------------------
# The grid
# --------------------------------------------------------------------------------------------


def _sequence_point(kind: str, T: int, B: int, H: int, bptt: bool, budget: float) -> list[dict]:
    torch.manual_seed(0)
    theirs = getattr(torch.nn, kind)(H, H)
    ours = getattr(lstm, kind).from_torch(theirs, backend="cpu")
    reference = getattr(lstm, kind).from_torch(theirs, backend="bptt")
    x = torch.randn(T, B, H)
    rows = []

    # Inference
    def infer(module):
        def run():
            with torch.inference_mode():
                module(x)

        return run

    fns = {"ours": infer(ours), "torch": infer(theirs)}
    if _have("onnxruntime"):
        session = _ort_session(theirs)
        feed = {"X": x.numpy(), "h0": np.zeros((1, B, H), np.float32)}
        if kind == "LSTM":
            feed["c0"] = feed["h0"]
        with torch.inference_mode():
            want = theirs(x)[0].numpy()
        got = session.run(["Y"], feed)[0][:, 0]
        if not np.allclose(got, want, atol=1e-4):
            raise RuntimeError(f"ONNX Runtime disagrees with torch by {abs(got - want).max()}")
        fns["onnxruntime"] = lambda: session.run(None, feed)
    jax_fns = _jax_fns(theirs, x)
    if jax_fns:
        fns["jax"] = jax_fns[0]
    if bptt:
        fns["bptt"] = infer(reference)
    rows.append(_row(kind, "inference", T, B, H, interleaved(fns, budget_s=budget)))

    # Training: forward + backward of a scalar loss, gradients for every weight
    def train(module):
        def run():
            module.zero_grad(set_to_none=True)
            out, _ = module(x)
            out.sum().backward()

        return run

    fns = {"ours": train(ours), "torch": train(theirs)}
    if jax_fns:
        fns["jax"] = jax_fns[1]
    if bptt:
        fns["bptt"] = train(reference)
    rows.append(_row(kind, "training", T, B, H, interleaved(fns, budget_s=budget)))
    return rows


_SGEMM = 0.0  # GFLOP/s, measured once per run


def _row(kind: str, mode: str, T: int, B: int, H: int, times: dict) -> dict:
    gates = 4 if kind == "LSTM" else 3
    flops = 2 * T * B * gates * H * (H + H)  # input and recurrent products, I = H
    if mode == "training":
        flops *= 3  # forward, and the two products of the backward
    ours = times["ours"]["median_ms"]
    row = {"cell": kind, "mode": mode, "T": T, "B": B, "H": H, "times": times,
           "ours_ms": ours, "gflops": flops / (ours * 1e-3) / 1e9}  # fmt: skip
    row["frac_sgemm"] = row["gflops"] / _SGEMM
    for peer, t in times.items():
        if peer != "ours":
            row[f"{peer}_ms"] = t["median_ms"]
            row[f"x_{peer}"] = t["median_ms"] / ours
    fastest = min((t["median_ms"], p) for p, t in times.items() if p not in ("ours", "bptt"))
    row["fastest_peer"], row["x_fastest"] = fastest[1], fastest[0] / ours
    return row


# --------------------------------------------------------------------------------------------
# Streaming: one step at a time, batch 1
# --------------------------------------------------------------------------------------------


def _streaming(H: int, budget: float, steps: int = 200) -> dict:
    torch.manual_seed(0)
    theirs = torch.nn.LSTM(H, H)
    cell = torch.nn.LSTMCell(H, H)
    cell.load_state_dict({k[:-3]: v for k, v in theirs.state_dict().items()})
    stream = lstm.Streamer(theirs)
    xs = torch.randn(steps, H)

    def ours():
        step = stream.step
        for x in xs:
            step(x)

    def lstm_cell():
        with torch.inference_mode():
            h = c = torch.zeros(1, H)
            for x in xs:
                h, c = cell(x[None], (h, c))

    def length_one():
        with torch.inference_mode():
            state = None
            for x in xs:
                _, state = theirs(x[None, None], state)

    fns = {"ours": ours, "LSTMCell": lstm_cell, "nn.LSTM(T=1)": length_one}
    if _have("onnxruntime"):
        session = _ort_session(theirs)
        xs_np = xs.numpy()[:, None, None]

        def onnxruntime():
            h = c = np.zeros((1, 1, H), np.float32)
            for x in xs_np:
                _, h, c = session.run(None, {"X": x, "h0": h, "c0": c})

        fns["onnxruntime"] = onnxruntime
    times = interleaved(fns, budget_s=budget)
    per_step = {k: 1e3 * v["median_ms"] / steps for k, v in times.items()}
    row = {"H": H, "B": 1, "backend": stream.backend, "times": times, "ours_us": per_step["ours"]}
    for peer, us in per_step.items():
        if peer != "ours":
            row[f"{peer}_us"] = us
            row[f"x_{peer}"] = us / per_step["ours"]
    return row


# --------------------------------------------------------------------------------------------


SEQ_COLUMNS = [("cell", "cell", ""), ("mode", "mode", ""), ("T", "T", "d"), ("B", "B", "d"),
               ("H", "H", "d"), ("ours_ms", "ours ms", ".3f"), ("torch_ms", "torch ms", ".3f"),
               ("onnxruntime_ms", "ORT ms", ".3f"), ("jax_ms", "JAX ms", ".3f"),
               ("bptt_ms", "bptt ms", ".2f"), ("x_torch", "x torch", ".2f"),
               ("x_onnxruntime", "x ORT", ".2f"), ("x_jax", "x JAX", ".2f"),
               ("x_fastest", "x fastest", ".2f"), ("gflops", "GFLOP/s", ".1f"),
               ("frac_sgemm", "of SGEMM", ".0%")]  # fmt: skip
STREAM_COLUMNS = [("H", "H", "d"), ("B", "B", "d"), ("ours_us", "ours us", ".2f"),
                  ("LSTMCell_us", "LSTMCell us", ".2f"), ("nn.LSTM(T=1)_us", "nn.LSTM(T=1) us", ".2f"),
                  ("onnxruntime_us", "ORT us", ".2f"), ("x_LSTMCell", "x LSTMCell", ".1f"),
                  ("x_nn.LSTM(T=1)", "x nn.LSTM", ".1f"), ("x_onnxruntime", "x ORT", ".2f")]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """Runs the suite; ``argv`` as on the command line (``lstm bench`` passes its own)."""
    parser = argparse.ArgumentParser(prog="cpu_lstm", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a reduced grid (minutes)")
    parser.add_argument("--cells", default="LSTM,GRU", help="comma list of LSTM, GRU")
    parser.add_argument("--threads", type=int, default=None, help="torch/ORT threads")
    parser.add_argument("--no-bptt", action="store_true", help="leave out our reference path")
    parser.add_argument("--budget", type=float, default=None, help="seconds per grid point")
    parser.add_argument("--name", default=None, help="results file name (no extension)")
    args = parser.parse_args(argv)
    cells = [c.strip().upper() for c in args.cells.split(",") if c.strip()]
    bad = [c for c in cells if c not in ("LSTM", "GRU")]
    if bad:
        print(f"cpu_lstm: --cells takes LSTM and GRU, got {', '.join(bad)}", file=sys.stderr)
        return 2
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if cpu_kernels.load_extension() is None:
        print(
            f"cpu_lstm: the CPU kernels are not built: {cpu_kernels.build_error()}", file=sys.stderr
        )
        return 1
    if args.quick:
        grid = [(100, 1, 64), (1000, 1, 64), (100, 16, 64), (100, 16, 256)]
        budget = args.budget or 1.0
    else:
        grid = list(itertools.product((100, 1000), (1, 16, 64), (64, 256, 512)))
        budget = args.budget or 3.0

    global _SGEMM
    info = machine()
    ext = cpu_kernels.load_extension()
    info["kernels_isa"], info["kernels_gemm"] = ext.isa(), ext.gemm_library()
    started = time.time()
    _SGEMM = sgemm_gflops()
    print(
        f"{info['cpu']}, {info['cores']} cores, {info['threads']} threads, load {info['loadavg_start']}"
    )
    print(f"SGEMM {_SGEMM:.1f} GFLOP/s (1024^3, the faster of MKL and oneDNN)")
    rows = []
    for kind in cells:
        for T, B, H in grid:
            bptt = not args.no_bptt and not (T * B * H > 1000 * 16 * 256)
            rows.extend(_sequence_point(kind, T, B, H, bptt, budget))
            print(f"  {kind} T={T} B={B} H={H}: ours {rows[-2]['ours_ms']:.3f} ms (inference), "
                  f"{rows[-1]['ours_ms']:.3f} ms (training)", flush=True)  # fmt: skip
    stream_rows = [_streaming(64, budget)]
    if not args.quick:
        stream_rows.append(_streaming(256, budget))
    sgemm_end = sgemm_gflops()
    print()
    table = print_table(rows, SEQ_COLUMNS)
    print()
    stream_table = print_table(stream_rows, STREAM_COLUMNS)
    name = args.name or ("cpu_lstm_quick" if args.quick else "cpu_lstm")
    info["loadavg_end"] = list(os.getloadavg())
    payload = {"benchmark": "cpu_lstm", "quick": args.quick, "machine": info,
               "sgemm_gflops": _SGEMM, "sgemm_gflops_end": sgemm_end,
               "seconds": time.time() - started, "sequences": rows, "streaming": stream_rows,
               "table": table, "streaming_table": stream_table}  # fmt: skip
    path = write_json(name, payload)
    (RESULTS / f"{name}.md").write_text(
        f"Machine: {info['cpu']}, {info['cores']} cores, {info['threads']} threads, torch "
        f"{info['torch']}, load average {info['loadavg_start']} -> {info['loadavg_end']}; "
        f"SGEMM {_SGEMM:.0f} GFLOP/s (end of run: {sgemm_end:.0f}).\n\n"
        + markdown_table(rows, SEQ_COLUMNS)
        + "\n\nStreaming, one step, batch 1 (microseconds per step):\n\n"
        + markdown_table(stream_rows, STREAM_COLUMNS)
        + "\n"
    )
    print(f"\nwrote {path} and {path.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
