"""The training loop every task uses: :func:`fit`.

What a task brings: a model, an iterable of training batches, and a *loss function*
``loss_fn(model, batch, state) -> (loss, state, count)`` (mean loss of the batch, the recurrent
state to carry into the next batch or ``None``, and how many items the mean is over). What
:func:`fit` does with them:

- optimizer (``torch.optim``: adam, adamw, sgd, rmsprop), learning rate warmup then a constant,
  linear or cosine schedule over the run's steps (``steps``, or ``epochs`` times the batches per
  epoch when the training data has a length, whichever ends first) or, when only a time budget
  is given, over the time budget;
- parameter groups (``param_groups``) with a learning rate of their own, a multiple of the
  schedule's, and frozen for their first epochs if asked: ULMFiT's discriminative fine-tuning
  and gradual unfreezing (:func:`group_lr_scale`);
- gradient-norm clipping (``clip_norm``); the norm before clipping is logged;
- weight averaging (``average``): from ``average_start`` of the run on, after every step, the
  mean of the weights so far (``"swa"``, stochastic weight averaging, Izmailov et al. 2018) or
  their exponential moving average (``"ema"``), with ``torch.optim.swa_utils.AveragedModel``;
  evaluations, the checkpoints' weights and the returned model are the averaged ones (the
  training weights travel in the checkpoint too, so ``resume`` stays exact);
- truncated BPTT: with ``carry_state`` the state returned for batch ``k`` is detached and passed
  into batch ``k+1`` (gradients stop at the batch boundary, the state does not); it starts from
  ``None`` at each epoch;
- stops at ``steps``, ``epochs`` or ``minutes`` of training time (evaluation and checkpoints
  excluded), or early when the validation loss has not improved for ``patience`` evaluations;
- evaluation every ``eval_every`` steps and at the end (``eval_fn(model) -> {"loss": ...}``);
- a progress bar (tqdm) with loss, learning rate and throughput; a metrics log
  (``metrics.jsonl``, one JSON object per line) and a training-curve plot (``curves.png``);
- checkpoints every ``checkpoint_every`` steps and at the end (see :mod:`lstm.checkpoint`),
  holding the weights, optimizer state, RNG states and carried state, so that ``resume=True``
  continues exactly where the run stopped: on CPU its losses equal the uninterrupted run's;
- data-parallel under ``torchrun``: call :func:`init_distributed` first and give each process its
  own shard of every global batch (e.g. ``StreamBatches(..., shard=(rank, world))``); gradients
  are averaged by DistributedDataParallel, and rank 0 alone logs, plots and checkpoints; every
  rank calls :func:`finish_distributed` when its work is done.

Example::

    result = fit(model, train_batches, lm_loss, TrainConfig(steps=1000, lr=2e-3), out_dir="runs/x")
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn

from lstm import checkpoint as ckpt
from lstm.checkpoint import JsonConfig

__all__ = [
    "FitResult",
    "TrainConfig",
    "detach_state",
    "evaluate_loss",
    "finish_distributed",
    "fit",
    "group_lr_scale",
    "init_distributed",
    "lr_factor",
    "plot_curves",
    "read_metrics",
    "to_device",
]

LossFn = Callable[[nn.Module, Any, Any], tuple[Tensor, Any, int]]
OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop")
SCHEDULES = ("constant", "linear", "cosine")
AVERAGES = (None, "swa", "ema")


@dataclass
class TrainConfig(JsonConfig):
    """How to train (stored in checkpoints as JSON). At least one of ``steps``, ``epochs`` and
    ``minutes`` must be set."""

    steps: int | None = None  # optimizer steps in all
    epochs: int | None = None  # passes over the training batches
    minutes: float | None = None  # training time budget (evaluation and checkpoints excluded)
    optimizer: str = "adam"
    lr: float = 2e-3
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)  # adam, adamw
    momentum: float = 0.9  # sgd, rmsprop
    schedule: str = "cosine"  # after warmup: constant | linear | cosine (to min_lr_ratio * lr)
    warmup_steps: int = 0
    min_lr_ratio: float = 0.0
    clip_norm: float | None = 1.0
    carry_state: bool = True  # truncated BPTT across consecutive batches
    eval_every: int | None = None  # steps; the end of training always evaluates
    patience: int | None = None  # early stopping: evaluations without improvement
    checkpoint_every: int | None = None  # steps; the end of training always checkpoints
    keep_checkpoints: int = 2
    log_every: int = 10  # steps per metrics line (losses averaged over them)
    seed: int = 0
    progress: bool = True
    device: str = "cpu"
    average: str | None = None  # weight averaging: None | "swa" (equal weights) | "ema"
    average_start: float = 0.5  # fraction of the run (steps or time) before averaging starts
    ema_decay: float = 0.999  # "ema": average = decay * average + (1 - decay) * weights

    def __post_init__(self) -> None:
        if self.steps is None and self.epochs is None and self.minutes is None:
            raise ValueError("give at least one of steps, epochs or minutes")
        for name in ("steps", "epochs", "eval_every", "checkpoint_every", "patience"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} should be at least 1, got {value}")
        if self.minutes is not None and not self.minutes > 0:
            raise ValueError(f"minutes should be positive, got {self.minutes}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(
                f"optimizer should be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}"
            )
        if self.schedule not in SCHEDULES:
            raise ValueError(
                f"schedule should be one of {', '.join(SCHEDULES)}, got {self.schedule!r}"
            )
        if not self.lr > 0:
            raise ValueError(f"lr should be positive, got {self.lr}")
        if self.clip_norm is not None and not self.clip_norm > 0:
            raise ValueError(f"clip_norm should be positive or None, got {self.clip_norm}")
        if self.log_every < 1 or self.keep_checkpoints < 1 or self.warmup_steps < 0:
            raise ValueError("log_every and keep_checkpoints should be >= 1, warmup_steps >= 0")
        if self.average not in AVERAGES:
            raise ValueError(f"average should be one of {', '.join(map(str, AVERAGES))}, got "
                             f"{self.average!r}")  # fmt: skip
        if not 0 <= self.average_start < 1:
            raise ValueError(f"average_start should be in [0, 1), got {self.average_start}")
        if not 0 < self.ema_decay < 1:
            raise ValueError(f"ema_decay should be in (0, 1), got {self.ema_decay}")
        self.betas = tuple(self.betas)


@dataclass
class FitResult:
    """What :func:`fit` did."""

    step: int
    epoch: int
    train_seconds: float
    train_loss: float | None  # mean over the last logging interval
    val: dict[str, float] | None  # the last evaluation
    best_val_loss: float | None
    stopped: str  # "steps" | "epochs" | "time" | "early stopping" | "target reached"
    checkpoint: Path | None
    metrics: Path | None
    history: list[dict] = field(default_factory=list)  # the metrics lines of this process


# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------


def detach_state(state: Any) -> Any:
    """The state with every tensor detached from its graph (the truncation of truncated BPTT):
    values flow into the next batch, gradients stop here."""
    if state is None:
        return None
    if torch.is_tensor(state):
        return state.detach()
    if isinstance(state, (tuple, list)):
        return type(state)(detach_state(s) for s in state)
    if isinstance(state, dict):
        return {k: detach_state(v) for k, v in state.items()}
    raise TypeError(
        f"a carried state should hold tensors, tuples, lists or dicts, got {type(state)}"
    )


def to_device(batch: Any, device: torch.device) -> Any:
    """``batch`` with every tensor in it (in tuples, lists, dicts) moved to ``device``."""
    if torch.is_tensor(batch):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, (tuple, list)):
        return type(batch)(to_device(b, device) for b in batch)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    return batch


def lr_factor(
    config: TrainConfig, step: int, fraction: float, total_steps: int | None = None
) -> float:
    """The multiplier of ``config.lr`` at optimizer step ``step`` (0-based) with ``fraction`` of
    the time budget spent: linear warmup over ``warmup_steps``, then the schedule over the rest.
    ``total_steps`` is the run's length in steps where it is known (default ``config.steps``;
    :func:`fit` also knows it from ``epochs``): the schedule then spans the steps after warmup,
    and ``fraction`` is not used."""
    if config.warmup_steps and step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    if config.schedule == "constant":
        return 1.0
    total = config.steps if total_steps is None else total_steps
    if total is not None:  # the schedule starts after warmup
        span = max(1, total - config.warmup_steps)
        fraction = (step - config.warmup_steps) / span
    fraction = min(max(fraction, 0.0), 1.0)
    low = config.min_lr_ratio
    if config.schedule == "linear":
        return low + (1 - low) * (1 - fraction)
    return low + (1 - low) * 0.5 * (1 + math.cos(math.pi * fraction))


def group_lr_scale(group: Mapping[str, Any], epoch: int) -> float:
    """The multiplier of the schedule's learning rate for a parameter group (see :func:`fit`'s
    ``param_groups``) in epoch ``epoch`` (0-based): its ``lr_scale`` (default 1), or 0 while
    ``epoch < frozen_epochs`` (default 0). :func:`fit` drops the gradients of a group at 0, so
    that it neither moves nor gathers optimizer state, and leaves them out of the clipped norm."""
    if epoch < group.get("frozen_epochs", 0):
        return 0.0
    return float(group.get("lr_scale", 1.0))


def _make_optimizer(params: list, config: TrainConfig) -> torch.optim.Optimizer:
    if config.optimizer == "adam":
        return torch.optim.Adam(params, config.lr, config.betas, weight_decay=config.weight_decay)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, config.lr, config.betas, weight_decay=config.weight_decay)
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            params, config.lr, momentum=config.momentum, weight_decay=config.weight_decay
        )
    return torch.optim.RMSprop(
        params, config.lr, momentum=config.momentum, weight_decay=config.weight_decay
    )


def init_distributed() -> tuple[int, int]:
    """Joins the process group that ``torchrun`` describes in the environment (``WORLD_SIZE``,
    ``RANK``, ``MASTER_ADDR`` ...): NCCL when CUDA is available, gloo otherwise. Returns
    ``(rank, world_size)``; ``(0, 1)`` when not launched by torchrun."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend)
    return dist.get_rank(), dist.get_world_size()


def finish_distributed() -> None:
    """Leaves the process group that :func:`init_distributed` joined, once a run has ended well:
    every rank waits at a barrier for the others, then destroys the group (nothing when none was
    joined). A rank other than 0 ends as soon as training does, while rank 0 still evaluates and
    writes; leaving then without a barrier or ``destroy_process_group`` killed about one 2-process
    run in ten with "terminate called without an active exception" (exit -6), which took rank 0
    down with it. ``lstm`` calls it after a command returns; not after an error, where a rank
    still inside a collective would leave the others waiting at the barrier."""
    if dist.is_available() and dist.is_initialized():
        try:
            dist.barrier()
        finally:
            dist.destroy_process_group()


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


@torch.no_grad()
def evaluate_loss(
    model: nn.Module, batches: Iterable, loss_fn: LossFn, carry_state: bool = True
) -> dict[str, float]:
    """The item-weighted mean of ``loss_fn`` over ``batches`` in eval mode, with the state carried
    across batches when ``carry_state``. Returns ``{"loss": ..., "count": ...}``."""
    was_training = model.training
    model.eval()
    total, count, state = 0.0, 0, None
    for batch in batches:
        loss, new_state, n = loss_fn(model, batch, state if carry_state else None)
        state = detach_state(new_state)
        total += float(loss) * n
        count += n
    model.train(was_training)
    if count == 0:
        raise ValueError("evaluation data gave no batches")
    return {"loss": total / count, "count": count}


def read_metrics(path: str | os.PathLike) -> list[dict]:
    """The lines of a ``metrics.jsonl`` file."""
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def plot_curves(
    runs: Mapping[str, list[dict]] | list[dict],
    path: str | os.PathLike,
    x: str = "step",
    scale: float = 1.0,
    ylabel: str = "loss (nats)",
    title: str | None = None,
) -> Path:
    """Training (thin) and validation (thick, dots) loss curves of one run (a metrics list) or
    several (a mapping label -> metrics list) against ``x`` (``"step"`` or ``"seconds"``), each
    loss multiplied by ``scale`` (``1/ln 2`` for bits). Written as a PNG with matplotlib's Agg."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not isinstance(runs, Mapping):
        runs = {"": runs}
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    for k, (label, lines) in enumerate(runs.items()):
        color = f"C{k}"
        train = [m for m in lines if m.get("split") == "train"]
        val = [m for m in lines if m.get("split") == "val"]
        name = f"{label} " if label else ""
        if train:
            ax.plot([m[x] for m in train], [m["loss"] * scale for m in train], color=color,
                    lw=0.8, alpha=0.6, label=f"{name}train")  # fmt: skip
        if val:
            ax.plot([m[x] for m in val], [m["loss"] * scale for m in val], color=color, lw=2,
                    marker="o", ms=3, label=f"{name}validation")  # fmt: skip
    ax.set_xlabel({"step": "optimizer step", "seconds": "training time (s)"}.get(x, x))
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    from lstm.viz import save_figure

    return save_figure(fig, path)


# --------------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------------


@dataclass
class _Progress:
    step: int = 0  # optimizer steps done
    epoch: int = 0  # current epoch (0-based)
    batch: int = 0  # batches of the current epoch already used
    train_seconds: float = 0.0
    items: int = 0
    best_val_loss: float | None = None
    evals_since_best: int = 0
    best_saved_loss: float | None = None  # validation loss of the checkpoint BEST points at
    averaged: int = 0  # steps in the weight average


def _gather_per_rank(tensors: dict[str, Tensor], device: torch.device) -> dict[str, Tensor]:
    """Every process's ``tensors`` as ``rank<r>.<name>`` (all ranks call this; rank 0 uses it)."""
    _, world = _world()
    if world == 1:
        return {f"rank0.{k}": v for k, v in tensors.items()}
    out = {}
    for name in sorted(tensors):
        t = tensors[name].contiguous()
        on = t.to(device)
        parts = [torch.empty_like(on) for _ in range(world)]
        dist.all_gather(parts, on)
        for r, part in enumerate(parts):
            out[f"rank{r}.{name}"] = part.cpu()
    return out


def _save(
    root: Path,
    module: nn.Module,
    optimizer: torch.optim.Optimizer,
    config: TrainConfig,
    progress: _Progress,
    state: Any,
    extra: Mapping[str, Any],
    best: bool,
    device: torch.device,
    averager: nn.Module | None = None,
) -> Path | None:
    rank, world = _world()
    mine = {f"rng.{k}": v for k, v in ckpt.get_rng_state().items()}
    state_tensors, structure = ckpt.flatten_state(state, "state")
    gathered = _gather_per_rank({**mine, **state_tensors}, device)
    if rank != 0:
        return None
    weights = module.state_dict()
    if averager is not None and progress.averaged:  # the averaged weights are the model's; the
        raw = ckpt.state_dict_to_tensors(weights)  # training weights go where resume finds them
        gathered.update({f"raw.{k}": v for k, v in raw.items()})
        weights = averager.module.state_dict()
    opt_tensors, opt_meta = ckpt.optimizer_state_to_tensors(optimizer.state_dict())
    trainer_meta = {"state_structure": json.dumps(structure), "world_size": str(world)}
    return ckpt.write_checkpoint(
        root,
        f"step-{progress.step:08d}",
        tensors={
            ckpt.MODEL: (ckpt.state_dict_to_tensors(weights), None),
            "optimizer.safetensors": (opt_tensors, opt_meta),
            "trainer.safetensors": (gathered, trainer_meta),
        },
        jsons={
            ckpt.CONFIG: {
                **extra,
                "train": config.to_json(),
                "progress": asdict(progress),
                "format": 1,
            }
        },
        keep=config.keep_checkpoints,
        best=best,
    )


def _restore(
    path: Path,
    module: nn.Module,
    optimizer: torch.optim.Optimizer,
    device: torch.device,
    averager: nn.Module | None = None,
) -> tuple[_Progress, Any]:
    rank, world = _world()
    meta = ckpt.load_json(path / ckpt.CONFIG)
    weights, _ = ckpt.load_tensors(path / ckpt.MODEL)
    module.load_state_dict(weights)
    opt_tensors, opt_meta = ckpt.load_tensors(path / "optimizer.safetensors")
    optimizer.load_state_dict(ckpt.optimizer_state_from_tensors(opt_tensors, opt_meta))
    trainer, trainer_meta = ckpt.load_tensors(path / "trainer.safetensors")
    saved_world = int(trainer_meta.get("world_size", "1"))
    if saved_world != world:
        raise ValueError(
            f"checkpoint {str(path)!r} was written by {saved_world} processes; resume it with "
            f"{saved_world}, not {world}"
        )
    prefix = f"rank{rank}."
    mine = {k[len(prefix) :]: v for k, v in trainer.items() if k.startswith(prefix)}
    ckpt.set_rng_state({k[4:]: v for k, v in mine.items() if k.startswith("rng.")})
    structure = json.loads(trainer_meta["state_structure"])
    state = ckpt.unflatten_state(mine, structure, device)
    progress = _Progress(**meta["progress"])
    if progress.averaged:  # the model file holds the average, "raw." the training weights
        if averager is None:
            raise ValueError(f"checkpoint {str(path)!r} averages its weights: resume it with the "
                             f"same average (TrainConfig.average)")  # fmt: skip
        averager.module.load_state_dict(weights)
        averager.n_averaged.fill_(progress.averaged)
        module.load_state_dict({k[4:]: v for k, v in trainer.items() if k.startswith("raw.")})
    return progress, state


def _truncate_metrics(path: Path, step: int) -> None:
    """Drops metrics lines logged after ``step`` (written by a run killed past its checkpoint)."""
    if not path.exists():
        return
    keep = [m for m in read_metrics(path) if m.get("step", 0) <= step]
    ckpt.atomic_write_text(path, "".join(json.dumps(m) + "\n" for m in keep))


def _seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 (code that uses the global generator)
    random.seed(seed)


def fit(
    model: nn.Module,
    train_data: Iterable,
    loss_fn: LossFn,
    config: TrainConfig,
    *,
    eval_fn: Callable[[nn.Module], Mapping[str, float]] | None = None,
    out_dir: str | os.PathLike | None = None,
    resume: bool = False,
    extra: Mapping[str, Any] | None = None,
    plot: Callable[[list[dict], Path], Any] | None = None,
    stop_when: Callable[[Mapping[str, float]], bool] | None = None,
    restore_best: bool = False,
    best_key: Callable[[Mapping[str, float]], Any] | None = None,
    param_groups: Iterable[Mapping[str, Any]] | None = None,
) -> FitResult:
    """Trains ``model`` on ``train_data`` (see the module docstring).

    Args:
        model: the module; moved to ``config.device`` (wrapped in DDP under torch.distributed).
        train_data: an iterable of batches, iterated once per epoch; it must yield the same
            batches every epoch for ``resume`` to be exact.
        loss_fn: ``(model, batch, state) -> (mean loss, next state or None, item count)``.
        config: the :class:`TrainConfig`.
        eval_fn: ``model -> {"loss": ..., ...}`` on validation data (rank 0 runs it); its
            ``loss`` drives early stopping and the ``BEST`` checkpoint.
        out_dir: where ``metrics.jsonl``, ``curves.png`` and ``checkpoints/`` go; ``None`` to
            write nothing.
        resume: continue from the latest checkpoint in ``out_dir`` (a fresh start if none).
        extra: JSON-able entries stored in every checkpoint's ``config.json`` (model config,
            vocabulary, task) so the checkpoint is usable on its own.
        plot: ``(metrics, out_dir) -> None`` to draw the curves; by default :func:`plot_curves`.
        stop_when: ``eval result -> bool``, checked after every evaluation: training stops with
            ``stopped="target reached"`` once it returns True (a task's own success criterion).
        restore_best: end with the weights of the best evaluation of this call (kept in memory on
            rank 0) instead of the last ones; the checkpoints written are unchanged.
        best_key: ``eval result -> a comparable``, lower is better, that ``restore_best`` picks
            by (default: the ``loss``; e.g. ``(error rate, loss)``).
        param_groups: instead of one group of all the model's parameters, groups
            ``{"params": [...], "lr_scale": s, "frozen_epochs": e}`` (both keys optional; see
            :func:`group_lr_scale`) that together hold every trainable parameter once, e.g. from
            :func:`lstm.models.classifier.discriminative_groups`.
    """
    rank, world = _world()
    device = torch.device(config.device)
    if device.type == "cuda" and device.index is None:  # under torchrun: this process's GPU
        device = torch.device("cuda", torch.cuda.current_device())
    module = model.to(device)
    module.train()
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        ids = [device.index or 0] if device.type == "cuda" else None
        model = DistributedDataParallel(module, device_ids=ids)
    params = [p for p in module.parameters() if p.requires_grad]
    groups = _check_groups(param_groups, params) if param_groups is not None else params
    optimizer = _make_optimizer(groups, config)
    averager = None
    if config.average is not None:
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

        ema = get_ema_multi_avg_fn(config.ema_decay) if config.average == "ema" else None
        averager = AveragedModel(module, multi_avg_fn=ema, use_buffers=True)
    out = Path(out_dir) if out_dir is not None else None
    root = out / "checkpoints" if out is not None else None
    metrics_path = out / "metrics.jsonl" if out is not None else None
    if out is not None and rank == 0:
        out.mkdir(parents=True, exist_ok=True)

    progress, state = _Progress(), None
    _seed_everything(config.seed + rank)
    if resume and root is not None and (root / "LATEST").exists():
        path = ckpt.find_checkpoint(root)
        progress, state = _restore(path, module, optimizer, device, averager)
        if rank == 0:
            _truncate_metrics(metrics_path, progress.step)
    elif rank == 0 and metrics_path is not None and metrics_path.exists():
        metrics_path.unlink()  # a fresh run starts a fresh log
    history = read_metrics(metrics_path) if (metrics_path and rank == 0 and resume
                                             and metrics_path.exists()) else []  # fmt: skip
    log_file = open(metrics_path, "a", encoding="utf-8") if metrics_path and rank == 0 else None
    budget = config.minutes * 60 if config.minutes is not None else None

    def log(entry: dict) -> None:
        history.append(entry)
        if log_file is not None:
            log_file.write(json.dumps(entry) + "\n")
            log_file.flush()

    bar = None
    if config.progress and rank == 0:
        from tqdm.auto import tqdm

        if config.steps is not None:
            bar = tqdm(total=config.steps, initial=progress.step, unit="step", dynamic_ncols=True)
        elif budget is not None:
            bar = tqdm(total=round(budget), initial=round(progress.train_seconds), unit="s",
                       dynamic_ncols=True, bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f}s "
                       "[{elapsed}<{remaining}{postfix}]")  # fmt: skip

    # The run's length in steps, where it is known: the schedule spans it.
    total_steps = config.steps
    per_epoch = len(train_data) if hasattr(train_data, "__len__") else 0
    if config.epochs is not None and per_epoch:
        by_epochs = config.epochs * per_epoch
        total_steps = by_epochs if total_steps is None else min(total_steps, by_epochs)

    def fraction() -> float:  # of the time budget; lr_factor uses it only without total_steps
        if budget is not None:
            return progress.train_seconds / budget
        return 0.0  # epochs of data without a length: constant after warmup

    def run_fraction() -> float:  # of the run's steps where known (else of its time)
        if total_steps:
            done = progress.step / total_steps
            return max(done, fraction()) if budget is not None else done
        return fraction()

    if averager is not None and not total_steps and budget is None:
        raise ValueError("average needs the run's length: steps, minutes, or epochs of training "
                         "data that has a len()")  # fmt: skip

    def evaluated_module() -> nn.Module:  # the averaged weights once there are any
        return averager.module if averager is not None and progress.averaged else module

    best_weights: dict[str, Any] = {"key": None, "state": None}

    def evaluate() -> dict | None:
        if eval_fn is None or rank != 0:
            return None
        scored = evaluated_module()
        result = dict(eval_fn(scored))
        scored.train()  # (eval_fn may leave it in eval mode; the average is never trained)
        note = {"averaged": progress.averaged} if averager is not None else {}
        log({"split": "val", "step": progress.step, "epoch": progress.epoch,
             "seconds": progress.train_seconds, **result, **note})  # fmt: skip
        if restore_best:
            key = best_key(result) if best_key is not None else result["loss"]
            if best_weights["key"] is None or key < best_weights["key"]:
                best_weights["key"] = key
                best_weights["state"] = {k: v.detach().clone() for k, v in
                                         scored.state_dict().items()}  # fmt: skip
        return result

    def sync_stop(stop: str | None) -> str | None:
        """Rank 0 decides (its clock, its evaluation); everyone follows, in step."""
        if world == 1:
            return stop
        reasons = [None, "steps", "epochs", "time", "early stopping", "target reached"]
        flag = torch.tensor([reasons.index(stop), progress.train_seconds], dtype=torch.float64)
        flag = flag.to(device)
        dist.broadcast(flag, 0)
        progress.train_seconds = float(flag[1])
        return reasons[int(flag[0])]

    window_loss, window_items, window_steps, window_seconds = 0.0, 0, 0, 0.0
    last_train_loss, last_val, stopped, saved = None, None, None, None
    last_saved_step = -1
    epoch_len = len(train_data) if hasattr(train_data, "__len__") else None

    def done() -> str | None:
        if config.steps is not None and progress.step >= config.steps:
            return "steps"
        if config.epochs is not None and progress.epoch >= config.epochs:
            return "epochs"
        if budget is not None and progress.train_seconds >= budget:
            return "time"
        return None

    stopped = sync_stop(done())
    while stopped is None:
        if hasattr(train_data, "set_epoch"):
            train_data.set_epoch(progress.epoch)
        iterator = iter(train_data)
        for _ in range(progress.batch):  # resuming mid-epoch: skip what was used
            next(iterator)
        for batch in iterator:
            t0 = time.perf_counter()
            lr = config.lr * lr_factor(config, progress.step, fraction(), total_steps)
            trained, frozen = [], []  # a frozen group neither moves, gathers optimizer state,
            for group in optimizer.param_groups:  # nor counts in the clipped norm
                scale = group_lr_scale(group, progress.epoch)
                group["lr"] = lr * scale
                (trained if scale > 0 else frozen).extend(group["params"])
            state_in = detach_state(state) if config.carry_state else None
            loss, state, count = loss_fn(model, to_device(batch, device), state_in)
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"the loss became {float(loss.detach())} at step {progress.step}: lower lr "
                    f"(now {lr:g}) or clip_norm (now {config.clip_norm})"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            for p in frozen:
                p.grad = None
            max_norm = config.clip_norm if config.clip_norm is not None else float("inf")
            grad_norm = float(nn.utils.clip_grad_norm_(trained, max_norm))
            optimizer.step()
            progress.step += 1
            if averager is not None and run_fraction() >= config.average_start:
                averager.update_parameters(module)
                progress.averaged += 1
            dt = time.perf_counter() - t0
            progress.batch += 1
            progress.train_seconds += dt
            progress.items += count * world
            window_loss += float(loss.detach()) * count
            window_items += count
            window_steps += 1
            window_seconds += dt

            if progress.step % config.log_every == 0 or (epoch_len and progress.batch == epoch_len):
                totals = torch.tensor([window_loss, window_items], dtype=torch.float64)
                if world > 1:
                    totals = totals.to(device)
                    dist.all_reduce(totals)
                    totals = totals.cpu()
                last_train_loss = float(totals[0] / totals[1])
                rate = float(totals[1]) / max(window_seconds, 1e-9)
                log({"split": "train", "step": progress.step, "epoch": progress.epoch,
                     "seconds": progress.train_seconds, "loss": last_train_loss, "lr": lr,
                     "grad_norm": grad_norm, "items_per_s": rate, "items": progress.items})  # fmt: skip
                if bar is not None:
                    bar.set_postfix(loss=f"{last_train_loss:.4f}", lr=f"{lr:.2e}",
                                    tok_s=f"{rate:,.0f}", refresh=False)  # fmt: skip
                window_loss, window_items, window_steps, window_seconds = 0.0, 0, 0, 0.0
            if bar is not None:
                if config.steps is not None:
                    bar.update(1)
                else:
                    bar.update(min(dt, max(0.0, bar.total - bar.n)))

            stop = done()
            evaluated = False
            if config.eval_every and progress.step % config.eval_every == 0 and stop is None:
                last_val = evaluate()
                if last_val is not None:
                    evaluated = True
                    _track_best(progress, last_val["loss"])
                    if config.patience and progress.evals_since_best >= config.patience:
                        stop = "early stopping"
                    if stop_when is not None and stop_when(last_val):
                        stop = "target reached"
            stop = sync_stop(stop)
            if (
                config.checkpoint_every
                and progress.step % config.checkpoint_every == 0
                and stop is None
                and root is not None
            ):
                best = _best_so_far(progress, last_val if evaluated else None)
                saved = _save(root, module, optimizer, config, progress, state,
                              extra or {}, best, device, averager)  # fmt: skip
                last_saved_step = progress.step
                if rank == 0:
                    _plot(plot, history, out)
            if stop is not None:
                stopped = stop
                break
        else:  # the epoch ended
            progress.epoch += 1
            progress.batch = 0
            state = None
            stopped = sync_stop(done())

    if bar is not None:
        bar.close()
    if window_items:  # the last partial logging window
        last_train_loss = window_loss / window_items
    evaluated = stopped in ("early stopping", "target reached")  # (just evaluated)
    if eval_fn is not None and not evaluated:
        last_val = evaluate()
        if last_val is not None:
            evaluated = True
            _track_best(progress, last_val["loss"])
    if root is not None and last_saved_step != progress.step:
        best = _best_so_far(progress, last_val if evaluated else None)  # rank 0 only matters
        saved = _save(root, module, optimizer, config, progress, state, extra or {}, best,
                      device, averager)  # fmt: skip
    if log_file is not None:
        log_file.close()
    if rank == 0 and out is not None:
        _plot(plot, history, out)
    if averager is not None and progress.averaged:
        module.load_state_dict(averager.module.state_dict())
    if best_weights["state"] is not None:
        module.load_state_dict(best_weights["state"])
    return FitResult(
        step=progress.step,
        epoch=progress.epoch,
        train_seconds=progress.train_seconds,
        train_loss=last_train_loss,
        val=last_val,
        best_val_loss=progress.best_val_loss,
        stopped=stopped,
        checkpoint=saved,
        metrics=metrics_path,
        history=history,
    )


def _check_groups(groups: Iterable[Mapping[str, Any]], params: list[nn.Parameter]) -> list[dict]:
    """``groups`` as the optimizer's parameter groups, once checked to hold each trainable
    parameter of the model exactly once (frozen ones, ``requires_grad=False``, are left out)."""
    out, seen = [], set()
    for i, group in enumerate(groups):
        extra = set(group) - {"params", "lr_scale", "frozen_epochs"}
        if extra:
            raise ValueError(f"param_groups[{i}] has unknown keys {sorted(extra)}")
        if not group.get("lr_scale", 1.0) >= 0 or group.get("frozen_epochs", 0) < 0:
            raise ValueError(f"param_groups[{i}]: lr_scale and frozen_epochs should be >= 0, got "
                             f"{group.get('lr_scale')} and {group.get('frozen_epochs')}")  # fmt: skip
        own = [p for p in group["params"] if p.requires_grad]
        if any(id(p) in seen for p in own):
            raise ValueError(f"param_groups[{i}] repeats a parameter of an earlier group")
        seen.update(id(p) for p in own)
        if own:
            out.append({**group, "params": own})
    missing = sum(id(p) not in seen for p in params)
    if missing or len(seen) != len(params):
        raise ValueError(f"param_groups should hold every trainable parameter of the model once: "
                         f"{missing} of {len(params)} are in none, or a group holds one that is "
                         f"not the model's")  # fmt: skip
    return out


def _track_best(progress: _Progress, loss: float) -> None:
    """The best validation loss so far and the evaluations since (early stopping's count);
    which checkpoint is ``BEST`` is :func:`_best_so_far`'s question."""
    if progress.best_val_loss is None or loss < progress.best_val_loss:
        progress.best_val_loss = loss
        progress.evals_since_best = 0
    else:
        progress.evals_since_best += 1


def _best_so_far(progress: _Progress, val: Mapping[str, float] | None) -> bool:
    """Whether the checkpoint about to be written becomes ``BEST``: it was validated at this step
    (``val``) and beats every checkpoint written before it. (Comparing with the best evaluation
    instead would leave ``BEST`` on an old checkpoint whenever the best evaluation fell between
    two checkpoints.)"""
    if val is None:
        return False
    if progress.best_saved_loss is None or val["loss"] < progress.best_saved_loss:
        progress.best_saved_loss = val["loss"]
        return True
    return False


def _plot(plot: Callable | None, history: list[dict], out: Path) -> None:
    if not history:
        return
    if plot is not None:
        plot(history, out)
    else:
        plot_curves(history, out / "curves.png")
