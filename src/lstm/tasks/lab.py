"""``lstm lab``: the long-time-lag experiments of the literature, trained and judged by the paper's
own criterion.

Training sequences are generated on line (as Hochreiter and Schmidhuber did), the test set is a
fixed 2,560 sequences from a seed of its own, and the report gives what the paper reports: how many
of the 2,560 are wrong, and how many training sequences it took. Image tasks (sequential and
permuted pixels) report test accuracy.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import lstm
from lstm.data import tasks
from lstm.training import TrainConfig, fit

__all__ = [
    "LAB_TASKS",
    "RECIPE",
    "LabRecipe",
    "LabResult",
    "SequenceModel",
    "evaluate_lab",
    "make_model",
    "run_lab",
    "train_lab",
]

TEST_SEQUENCES = 2560  # the paper's test-set size
TEST_SEED = 10_000  # test data never share a seed with training data


@dataclass(frozen=True)
class LabRecipe:
    """The training recipe of ``lstm lab``, ``lstm viz gradients`` and scripts/lab_results.py,
    measured to solve the adding problem at T = 100 (docs/results.md): Adam at ``lr``, gradient
    clipping at 1.0, and a forget-gate bias of 5. The bias matters most: at the usual b_f = 1 the
    gate starts near sigmoid(1) = 0.73, so a memory fades as 0.73^50 ~ 1e-7 over the task's
    shortest lag and the gradient that would teach the cell to keep it vanishes with it; at
    b_f = 5 (0.993^50 ~ 0.7) the cell starts as the 1997 paper's constant error carousel (which
    had no forget gate at all) and learns what to forget later."""

    hidden_size: int = 64
    batch_size: int = 16
    steps: int = 10_000
    lr: float = 3e-3
    forget_bias: float = 5.0
    eval_every: int = 250


RECIPE = LabRecipe()


@dataclass(frozen=True)
class LabTask:
    """How a task is generated, read out, scored and judged."""

    input_size: int
    output_size: int
    per_step: bool  # an output at every step (Reber, copy) or only at the end
    kind: str  # "regression" | "class" | "multilabel"
    make: Callable[[int, torch.Generator], tasks.SequenceTask]
    wrong: Callable[[Tensor, tasks.SequenceTask], int]  # (model outputs, batch) -> wrong count
    solved_at: int = 0  # wrong of 2,560 at or below which training may stop
    paper: str = ""


def _adding(T: int) -> LabTask:
    return LabTask(
        2, 1, False, "regression",
        lambda n, g: tasks.adding_problem(n, T, g),
        lambda out, b: tasks.adding_wrong(out.squeeze(-1), b.targets),
        paper={100: "1 wrong of 2,560 after 74,000 sequences",
               500: "0 wrong after 209,000", 1000: "1 wrong after 853,000"}.get(T, ""),
    )  # fmt: skip


def _order(variant: str) -> LabTask:
    classes = 4 if variant == "6a" else 8
    return LabTask(
        8, classes, False, "class",
        lambda n, g: tasks.temporal_order(n, variant, g),
        lambda out, b: tasks.temporal_order_wrong(out.softmax(-1), b.targets),
        paper={"6a": "1 wrong of 2,560 after 31,390 sequences",
               "6b": "2 wrong after 571,100"}[variant],
    )  # fmt: skip


def _copy_wrong(out: Tensor, batch: tasks.SequenceTask) -> int:
    length = batch.info["data"].shape[1]
    guess = out[:, -length:].argmax(-1)
    return int((guess != batch.info["data"]).any(dim=1).sum())


def _pixels(loader: Callable[[], tasks.SequenceTask]) -> Callable[[int, torch.Generator], Any]:
    cache: dict[str, tasks.SequenceTask] = {}

    def make(n: int, g: torch.Generator) -> tasks.SequenceTask:
        if "all" not in cache:
            cache["all"] = loader()
        data = cache["all"]
        index = torch.randint(len(data.targets), (n,), generator=g)
        return tasks.SequenceTask(data.inputs[index], data.lengths[index], data.targets[index], {})

    return make


LAB_TASKS: dict[str, Callable[[int], LabTask]] = {
    "adding": _adding,
    "temporal-order-6a": lambda T: _order("6a"),
    "temporal-order-6b": lambda T: _order("6b"),
    "reber": lambda T: LabTask(
        7, 7, True, "multilabel", lambda n, g: tasks.embedded_reber(n, g),
        lambda out, b: tasks.reber_wrong(out.sigmoid(), b.targets, b.lengths),
        paper="LSTM: 100% of test strings right in 97% of trials (Exp. 1)",
    ),
    "copy": lambda T: LabTask(
        10, 10, True, "class", lambda n, g: tasks.copy_task(n, T, g), _copy_wrong,
        paper="Arjovsky et al. 2016: LSTM stalls at the memoryless baseline for T >= 500",
    ),
    "digits": lambda T: LabTask(
        1, 10, False, "class", _pixels(tasks.load_digits_sequences),
        lambda out, b: int((out.argmax(-1) != b.targets).sum()),
    ),
    "digits-permuted": lambda T: LabTask(
        1, 10, False, "class", _pixels(lambda: tasks.load_digits_sequences(permute=True)),
        lambda out, b: int((out.argmax(-1) != b.targets).sum()),
    ),
}  # fmt: skip


class SequenceModel(nn.Module):
    """A recurrent layer (``lstm.LSTM``/``GRU``/``RNN``) and a linear read-out, either of the final
    state (classification or regression of the whole sequence) or of every step."""

    def __init__(
        self,
        cell: str,
        input_size: int,
        hidden_size: int,
        output_size: int,
        per_step: bool,
        num_layers: int = 1,
        forget_bias: float | None = None,
        backend: str = "auto",
        chrono: int | None = None,
    ) -> None:
        super().__init__()
        layers = {"lstm": lstm.LSTM, "gru": lstm.GRU, "rnn": lstm.RNN}
        if cell not in layers:
            raise ValueError(f"cell should be one of lstm, gru, rnn, got {cell!r}")
        self.cell, self.per_step = cell, per_step
        self.rnn = layers[cell](
            input_size, hidden_size, num_layers, batch_first=True, backend=backend
        )
        if (forget_bias is not None or chrono is not None) and cell != "lstm":
            raise ValueError(f"forget_bias and chrono apply to the LSTM only, got cell={cell!r}")
        if chrono is not None and chrono < 3:
            raise ValueError(f"chrono should be the longest dependency, at least 3, got {chrono}")
        if chrono is not None or forget_bias is not None:
            self._init_gate_biases(hidden_size, num_layers, forget_bias, chrono)
        self.head = nn.Linear(hidden_size, output_size)

    @torch.no_grad()
    def _init_gate_biases(
        self, H: int, num_layers: int, forget_bias: float | None, chrono: int | None
    ) -> None:
        """Rows of (i, f, g, o); a gate's bias is b_ih + b_hh, so all of it goes in b_ih."""
        for layer in range(num_layers):
            b_ih, b_hh = (
                getattr(self.rnn, f"bias_ih_l{layer}"),
                getattr(self.rnn, f"bias_hh_l{layer}"),
            )
            if chrono is not None:
                # Chrono initialization (Tallec and Ollivier 2018): each cell gets its own time
                # scale, b_f = log(u) with u ~ U(1, chrono - 1), and writes as rarely as it
                # forgets, b_i = -b_f, as the 1997 paper's negative input-gate biases did.
                b_f = torch.log(torch.empty(H).uniform_(1, chrono - 1))
                b_ih[:H], b_ih[H : 2 * H] = -b_f, b_f
                b_hh[: 2 * H] = 0.0
            else:
                b_ih[H : 2 * H] = forget_bias
                b_hh[H : 2 * H] = 0.0

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        """``x (B, T, I)``, ``lengths (B,)`` -> ``(B, O)`` or, per step, ``(B, T, O)``."""
        ragged = bool((lengths != x.shape[1]).any())
        inp = (
            pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
            if ragged
            else x
        )
        out, hidden = self.rnn(inp)
        if self.per_step:
            if ragged:
                out = pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])[0]
            return self.head(out)
        h_n = hidden[0] if isinstance(hidden, tuple) else hidden
        return self.head(h_n[-1])  # the last layer's state after each sequence's last real step


def make_model(task: LabTask, cell: str, hidden_size: int, **kwargs: Any) -> SequenceModel:
    return SequenceModel(
        cell, task.input_size, hidden_size, task.output_size, task.per_step, **kwargs
    )


def _loss(task: LabTask, out: Tensor, batch: tasks.SequenceTask) -> Tensor:
    if task.kind == "regression":
        return F.mse_loss(out.squeeze(-1), batch.targets)
    if task.kind == "multilabel":
        valid = (torch.arange(out.shape[1]).unsqueeze(0) < batch.lengths.unsqueeze(1)).unsqueeze(-1)
        per = F.binary_cross_entropy_with_logits(out, batch.targets, reduction="none")
        return (per * valid).sum() / (valid.sum() * out.shape[-1])
    if task.per_step:
        return F.cross_entropy(out.reshape(-1, out.shape[-1]), batch.targets.reshape(-1))
    return F.cross_entropy(out, batch.targets)


class OnlineSequences:
    """``steps_per_epoch`` fresh batches per epoch, drawn from a generator seeded by (seed, epoch):
    new data every epoch, the same data again for the same epoch (resumable)."""

    def __init__(self, task: LabTask, batch_size: int, steps_per_epoch: int, seed: int) -> None:
        self.task, self.batch_size, self.steps, self.seed, self.epoch = (
            task, batch_size, steps_per_epoch, seed, 0,
        )  # fmt: skip

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator[tasks.SequenceTask]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        for _ in range(self.steps):
            yield self.task.make(self.batch_size, g)


@torch.no_grad()
def evaluate_lab(model: SequenceModel, task: LabTask, test: tasks.SequenceTask) -> dict[str, float]:
    """Loss and the paper's criterion on the test set (in chunks, in eval mode)."""
    was = model.training
    model.eval()
    wrong, loss, n = 0, 0.0, len(test.targets)
    for start in range(0, n, 512):
        part = tasks.SequenceTask(test.inputs[start : start + 512], test.lengths[start : start + 512],
                                  test.targets[start : start + 512],
                                  {k: v[start : start + 512] for k, v in test.info.items()
                                   if torch.is_tensor(v) and len(v) == n})  # fmt: skip
        out = model(part.inputs, part.lengths)
        loss += float(_loss(task, out, part)) * len(part.targets)
        wrong += task.wrong(out, part)
    model.train(was)
    return {"loss": loss / n, "wrong": float(wrong), "accuracy": 1 - wrong / n}


@dataclass
class LabResult:
    task: str
    cell: str
    seed: int
    wrong: int
    test_sequences: int
    sequences_seen: int
    solved_after: int | None  # training sequences when the test criterion was first met
    seconds: float
    stopped: str
    paper: str
    config: dict = field(default_factory=dict)


def train_lab(
    task_name: str,
    cell: str = "lstm",
    length: int = 100,
    hidden_size: int = RECIPE.hidden_size,
    batch_size: int = RECIPE.batch_size,
    steps: int | None = RECIPE.steps,
    minutes: float | None = None,
    lr: float = RECIPE.lr,
    forget_bias: float | None = RECIPE.forget_bias,
    eval_every: int = RECIPE.eval_every,
    seed: int = 0,
    out_dir: str | Path | None = None,
    backend: str = "auto",
    progress: bool = True,
    chrono: int | None = None,
) -> tuple[LabResult, SequenceModel]:
    """Trains ``cell`` on a lab task and judges it as the paper does; returns the result and the
    trained model. Stops early once the test set is solved (wrong <= the task's ``solved_at``).
    The defaults are :data:`RECIPE` (see :class:`LabRecipe`); ``chrono`` (the longest lag
    expected) replaces the forget-gate bias by chrono initialization (:class:`SequenceModel`)."""
    if task_name not in LAB_TASKS:
        raise ValueError(f"task should be one of {', '.join(LAB_TASKS)}, got {task_name!r}")
    task = LAB_TASKS[task_name](length)
    torch.manual_seed(seed)
    if cell != "lstm" or chrono is not None:
        forget_bias = None
    model = make_model(task, cell, hidden_size, forget_bias=forget_bias, backend=backend,
                       chrono=chrono)  # fmt: skip
    test = task.make(TEST_SEQUENCES, torch.Generator().manual_seed(TEST_SEED))
    config = TrainConfig(steps=steps, minutes=minutes, lr=lr, eval_every=eval_every, seed=seed,
                         schedule="constant", clip_norm=1.0, carry_state=False, progress=progress,
                         log_every=max(1, eval_every // 2))  # fmt: skip
    data = OnlineSequences(task, batch_size, steps_per_epoch=1000, seed=seed)

    def loss_fn(model, batch, state):
        return _loss(task, model(batch.inputs, batch.lengths), batch), None, len(batch.targets)

    result = fit(
        model, data, loss_fn, config,
        eval_fn=lambda m: evaluate_lab(m, task, test),
        out_dir=out_dir,
        stop_when=lambda r: r["wrong"] <= task.solved_at,
        extra={"lab": {"task": task_name, "cell": cell, "length": length, "hidden": hidden_size}},
    )  # fmt: skip
    solved = next((e["step"] * batch_size for e in result.history
                   if e.get("split") == "val" and e["wrong"] <= task.solved_at), None)  # fmt: skip
    final = result.val or evaluate_lab(model, task, test)
    lab = LabResult(
        task_name, cell, seed, int(final["wrong"]), TEST_SEQUENCES, result.step * batch_size, solved,
        result.train_seconds, result.stopped, task.paper,
        dict(length=length, hidden_size=hidden_size, batch_size=batch_size, lr=lr,
             forget_bias=forget_bias, optimizer="adam", chrono=chrono),
    )  # fmt: skip
    if out_dir is not None:
        (Path(out_dir) / "lab.json").write_text(json.dumps(asdict(lab), indent=2) + "\n")
    return lab, model


def run_lab(task_name: str, **kwargs: Any) -> LabResult:
    """:func:`train_lab` without the model (arguments the same)."""
    return train_lab(task_name, **kwargs)[0]


def format_result(r: LabResult) -> str:
    solved = f"{r.solved_after:,}" if r.solved_after is not None else "not within the budget"
    return (
        f"{r.task} (T={r.config['length']}) {r.cell}: {r.wrong} wrong of {r.test_sequences:,} "
        f"test sequences; {r.sequences_seen:,} training sequences seen; solved after {solved}; "
        f"{r.seconds:.0f} s ({r.stopped}). Paper: {r.paper or 'n/a'}."
    )


# -- the command --------------------------------------------------------------------------------


def add_lab_arguments(p) -> None:
    from lstm.cli import positive_float, positive_int

    p.add_argument("task", choices=list(LAB_TASKS), help="the experiment")
    p.add_argument("--cell", choices=["lstm", "gru", "rnn"], default="lstm")
    p.add_argument("--length", type=positive_int, default=100,
                   help="T: minimal length (adding), delay (copy)")  # fmt: skip
    p.add_argument("--hidden", type=positive_int, default=RECIPE.hidden_size)
    p.add_argument("--batch", type=positive_int, default=RECIPE.batch_size)
    p.add_argument("--steps", type=positive_int, default=RECIPE.steps,
                   help="at most this many updates")  # fmt: skip
    p.add_argument("--minutes", type=positive_float, help="and/or at most this long")
    p.add_argument("--lr", type=positive_float, default=RECIPE.lr)
    p.add_argument("--forget-bias", type=float, default=RECIPE.forget_bias,
                   help="LSTM forget-gate bias b_f (5 keeps memories over ~100 steps at first)")  # fmt: skip
    p.add_argument("--chrono", type=positive_int, metavar="T_MAX",
                   help="LSTM: chrono initialization for lags up to T_MAX, not --forget-bias")  # fmt: skip
    p.add_argument("--eval-every", type=positive_int, default=RECIPE.eval_every)
    p.add_argument("--seeds", type=positive_int, default=1, help="repeat with seeds 0..N-1")
    p.add_argument("--backend", default="auto")
    p.add_argument("--out", default=None, help="run directory (metrics, curves, checkpoints)")


def run_lab_command(args) -> int:
    results = []
    for seed in range(args.seeds):
        out = None if args.out is None else Path(args.out) / f"{args.task}-{args.cell}-seed{seed}"
        r = run_lab(
            args.task, cell=args.cell, length=args.length, hidden_size=args.hidden,
            batch_size=args.batch, steps=args.steps, minutes=args.minutes, lr=args.lr,
            forget_bias=args.forget_bias, eval_every=args.eval_every, seed=seed, out_dir=out,
            backend=args.backend, chrono=args.chrono,
        )  # fmt: skip
        print(format_result(r))
        results.append(r)
    if args.seeds > 1:
        wrong = [r.wrong for r in results]
        solved = [r.solved_after for r in results if r.solved_after is not None]
        print(f"over {args.seeds} seeds: wrong {wrong}; solved in {len(solved)} "
              f"(median sequences {sorted(solved)[len(solved) // 2]:,})" if solved else
              f"over {args.seeds} seeds: wrong {wrong}; none solved within the budget")  # fmt: skip
    return 0
