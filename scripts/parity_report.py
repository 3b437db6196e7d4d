"""Prints the worst disagreement between lstm's layers and torch.nn over random configurations
(outputs, final states, every gradient), in float32 and float64, and the gradcheck results of the
hand-written BPTT. Usage: .venv/bin/python scripts/parity_report.py [--configs N]"""

from __future__ import annotations

import argparse
import random

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

import lstm
from lstm import bptt

KINDS = {"LSTM": (lstm.LSTM, nn.LSTM), "GRU": (lstm.GRU, nn.GRU), "RNN": (lstm.RNN, nn.RNN)}


def _tensors(out):
    if isinstance(out, torch.nn.utils.rnn.PackedSequence):
        return [out.data]
    if isinstance(out, torch.Tensor):
        return [out]
    return [t for o in out for t in _tensors(o)]


def worst(
    kind: str, dtype: torch.dtype, configs: int, rng: random.Random
) -> tuple[float, float, float]:
    """(max abs error of outputs and states, of gradients, and of gradients relative to their
    largest magnitude in the same configuration)."""
    out_err = grad_err = grad_rel = 0.0
    for _ in range(configs):
        T, B, I, H = rng.randint(1, 30), rng.randint(1, 6), rng.randint(1, 16), rng.randint(2, 32)
        kw = dict(num_layers=rng.randint(1, 3), bidirectional=rng.random() < 0.5,
                  bias=rng.random() < 0.8, batch_first=rng.random() < 0.5)  # fmt: skip
        if kind == "LSTM" and rng.random() < 0.3:
            kw["proj_size"] = rng.randint(1, H - 1)
        if kind == "RNN":
            kw["nonlinearity"] = rng.choice(["tanh", "relu"])
        theirs = KINDS[kind][1](I, H, dtype=dtype, **kw)
        ours = KINDS[kind][0].from_torch(theirs)
        packed = rng.random() < 0.4
        lengths = torch.tensor([T] + [rng.randint(1, T) for _ in range(B - 1)])
        seed = rng.randint(0, 2**31)
        results = []
        for m in (ours, theirs):
            g = torch.Generator().manual_seed(seed)
            shape = (B, T, I) if kw["batch_first"] else (T, B, I)
            x = torch.randn(*shape, generator=g, dtype=dtype, requires_grad=True)
            inp = pack_padded_sequence(x, lengths, kw["batch_first"], False) if packed else x
            outs = _tensors(m(inp))
            loss = sum((torch.randn(o.shape, generator=g, dtype=dtype) * o).sum() for o in outs)
            results.append((outs, torch.autograd.grad(loss, [x, *m.parameters()])))
        (oa, ga), (ob, gb) = results
        out_err = max(out_err, *((a - b).abs().max().item() for a, b in zip(oa, ob)))
        errs = [(a - b).abs().max().item() for a, b in zip(ga, gb)]
        scale = max(b.abs().max().item() for b in gb)
        grad_err = max(grad_err, *errs)
        grad_rel = max(grad_rel, max(errs) / max(scale, 1e-30))
    return out_err, grad_err, grad_rel


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--configs", type=int, default=100, help="random configurations per row")
    args = parser.parse_args()
    rng = random.Random(0)
    print(f"Worst |ours - torch.nn| over {args.configs} random configurations each")
    print(f"{'layer':6} {'dtype':8} {'outputs+states':>15} {'gradients':>12} {'grad/scale':>11}")
    for kind in KINDS:
        for dtype in (torch.float32, torch.float64):
            o, g, rel = worst(kind, dtype, args.configs, rng)
            print(f"{kind:6} {str(dtype)[6:]:8} {o:15.2e} {g:12.2e} {rel:11.2e}")
    d = dict(dtype=torch.float64)
    mask = (torch.arange(6).unsqueeze(1) < torch.tensor([6, 3, 5]).unsqueeze(0)).unsqueeze(-1)
    r = lambda *s: torch.randn(*s, **d, requires_grad=True)  # noqa: E731
    checks = {
        "LSTM+proj": (lambda *a: bptt.lstm_sequence(*a, mask),
                      (r(6, 3, 4), r(3, 2), r(3, 5), r(20, 4), r(20, 2), r(20), r(2, 5))),
        "GRU": (lambda *a: bptt.gru_sequence(*a, mask),
                (r(6, 3, 4), r(3, 5), r(15, 4), r(15, 5), r(15), r(15))),
        "RNN": (lambda *a: bptt.rnn_sequence(*a, mask, "tanh"),
                (r(6, 3, 4), r(3, 5), r(5, 4), r(5, 5), r(5))),
    }  # fmt: skip
    print("\nHand-written BPTT, float64, ragged lengths (6, 3, 5):")
    for name, (fn, inputs) in checks.items():
        ok1 = torch.autograd.gradcheck(fn, inputs)
        ok2 = torch.autograd.gradgradcheck(fn, inputs)
        print(
            f"  {name:10} gradcheck {'pass' if ok1 else 'FAIL'}   gradgradcheck {'pass' if ok2 else 'FAIL'}"
        )


if __name__ == "__main__":
    main()
