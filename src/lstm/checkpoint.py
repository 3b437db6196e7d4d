"""Checkpoints: safetensors for tensors, JSON for everything else, written atomically, never pickled.

A checkpoint is a directory::

    run/checkpoints/
        LATEST                  the name of the newest complete checkpoint (replaced atomically)
        BEST                    the name of the best one by validation loss (when there is one)
        step-00001200/
            model.safetensors       the model's weights (tied weights stored once per name)
            optimizer.safetensors   the optimizer's state tensors; the rest in its JSON metadata
            trainer.safetensors     RNG states and carried recurrent state of every process
            config.json             model config, vocabulary, training config and progress

Atomicity: a checkpoint is written into a temporary directory beside the others, every file and
the directory are fsync'ed, the directory is renamed into place, and only then is ``LATEST``
replaced (a small file written to a temporary name, fsync'ed and ``os.replace``'d). A process
killed at any moment leaves ``LATEST`` naming a complete checkpoint; a half-written temporary
directory is ignored and removed by the next write. Old checkpoints are pruned only after
``LATEST`` names the new one.

Reading uses :func:`safetensors.torch.load_file` and :func:`json.load`: nothing is unpickled.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

__all__ = [
    "CheckpointError",
    "JsonConfig",
    "atomic_write_text",
    "find_checkpoint",
    "flatten_state",
    "get_rng_state",
    "load_json",
    "load_task_checkpoint",
    "load_tensors",
    "optimizer_state_from_tensors",
    "optimizer_state_to_tensors",
    "runnable_backend",
    "set_rng_state",
    "state_dict_to_tensors",
    "unflatten_state",
    "write_checkpoint",
    "write_final",
]

TMP_PREFIX = ".tmp-"
CONFIG = "config.json"
MODEL = "model.safetensors"


class CheckpointError(ValueError):
    """A path that is not a usable checkpoint."""


class JsonConfig:
    """A base for the hyperparameter dataclasses that checkpoints store as JSON: ``to_json`` and
    ``from_json`` (which ignores keys a newer or older version does not know), and the argument
    checks they share, each raising a ValueError that names the field and its value."""

    def to_json(self) -> dict:
        return asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_json(cls, data: Mapping[str, Any]):  # -> the subclass
        known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        return cls(**{k: v for k, v in data.items() if k in known})

    def check_one_of(self, name: str, choices: Iterable[str]) -> None:
        value, choices = getattr(self, name), tuple(choices)
        if value not in choices:
            raise ValueError(f"{name} should be one of {', '.join(choices)}, got {value!r}")

    def check_at_least_one(self, *names: str) -> None:
        for name in names:
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} should be at least 1, got {getattr(self, name)}")

    def check_rate(self, *names: str) -> None:
        """A probability such as a dropout rate: in [0, 1)."""
        for name in names:
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"{name} should be in [0, 1), got {getattr(self, name)}")

    def check_heads(self) -> None:
        """A Transformer's width must split evenly over its attention heads."""
        if getattr(self, "cell", None) == "transformer" and self.hidden_size % self.num_heads:
            raise ValueError(
                f"hidden_size {self.hidden_size} should be divisible by num_heads {self.num_heads}"
            )


# --------------------------------------------------------------------------------------------
# Atomic files and directories
# --------------------------------------------------------------------------------------------


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # some platforms cannot open a directory; the rename is still atomic
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Writes ``text`` to ``path`` so that a reader sees the old file or the new one, never a
    mixture: temporary file in the same directory, fsync, ``os.replace``, fsync the directory."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX + path.name + "-", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def write_checkpoint(
    root: str | os.PathLike,
    name: str,
    tensors: Mapping[str, tuple[Mapping[str, Tensor], Mapping[str, str] | None]],
    jsons: Mapping[str, Any],
    keep: int = 2,
    best: bool = False,
) -> Path:
    """Writes the checkpoint ``root/name`` atomically and points ``root/LATEST`` at it.

    ``tensors`` maps a file name to ``(tensors, string metadata)`` (a safetensors file);
    ``jsons`` maps a file name to a JSON-able object. ``best=True`` also points ``BEST`` at it.
    Keeps the newest ``keep`` checkpoints (and the best one). Returns the checkpoint's path.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for stale in root.glob(TMP_PREFIX + "*"):  # left by a process killed mid-write
        shutil.rmtree(stale, ignore_errors=True) if stale.is_dir() else stale.unlink(True)
    tmp = Path(tempfile.mkdtemp(prefix=TMP_PREFIX + name + "-", dir=root))
    for filename, (named, metadata) in tensors.items():
        save_file(dict(named), str(tmp / filename), metadata=dict(metadata or {}))
        _fsync_file(tmp / filename)
    for filename, obj in jsons.items():
        with open(tmp / filename, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=1, ensure_ascii=False)
            f.flush()
            os.fsync(f.fileno())
    _fsync_dir(tmp)
    final = root / name
    if final.exists():  # rewriting the same step (e.g. the final save): move the old one aside
        aside = root / (TMP_PREFIX + "old-" + name)
        os.rename(final, aside)
        os.rename(tmp, final)
        shutil.rmtree(aside, ignore_errors=True)
    else:
        os.rename(tmp, final)
    _fsync_dir(root)
    atomic_write_text(root / "LATEST", name + "\n")
    if best:
        atomic_write_text(root / "BEST", name + "\n")
    _prune(root, keep)
    return final


def write_final(
    out_dir: str | os.PathLike, model: torch.nn.Module, extra: dict, train_config
) -> Path:
    """A task's trained weights (the best ones, after ``fit(restore_best=True)``) as
    ``out_dir/checkpoints/final``, with the task's ``extra`` config and the training config in
    its JSON; ``BEST`` points at it."""
    return write_checkpoint(
        Path(out_dir) / "checkpoints", "final",
        tensors={MODEL: (state_dict_to_tensors(model.state_dict()), None)},
        jsons={CONFIG: {**extra, "train": train_config.to_json()}},
        keep=train_config.keep_checkpoints + 1, best=True,
    )  # fmt: skip


def _pointer(root: Path, which: str) -> str | None:
    try:
        return (root / which).read_text(encoding="utf-8").strip() or None
    except OSError:
        return None


def _prune(root: Path, keep: int) -> None:
    latest, best = _pointer(root, "LATEST"), _pointer(root, "BEST")
    names = sorted(
        p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(TMP_PREFIX)
    )
    if latest in names:  # never prune by name order past the one LATEST names
        names = names[: names.index(latest) + 1]
    for name in names[: max(0, len(names) - keep)]:
        if name not in (latest, best):
            shutil.rmtree(root / name, ignore_errors=True)


def find_checkpoint(path: str | os.PathLike, which: str = "LATEST") -> Path:
    """The checkpoint directory that ``path`` names: a checkpoint itself, a ``checkpoints/``
    directory (its ``LATEST`` or ``BEST``), or a run directory holding ``checkpoints/``."""
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    if p.is_file():
        if p.name in (CONFIG, MODEL):
            p = p.parent
        else:
            raise CheckpointError(
                f"checkpoint {str(path)!r} is a file; expected a checkpoint directory "
                f"(holding {CONFIG} and {MODEL}) or a run directory"
            )
    if (p / "checkpoints").is_dir():
        p = p / "checkpoints"
    if (p / which).is_file() or (p / "LATEST").is_file():
        name = _pointer(p, which) or _pointer(p, "LATEST")
        if name is None or not (p / name).is_dir():
            raise CheckpointError(f"{p / which} names a missing checkpoint {name!r}")
        p = p / name
    if not (p / CONFIG).is_file() or not (p / MODEL).is_file():
        raise CheckpointError(
            f"{str(path)!r} is not a checkpoint: expected {CONFIG} and {MODEL} in it"
        )
    return p


def load_task_checkpoint(
    path: str | os.PathLike, task: str, kind: str, which: str = "BEST"
) -> tuple[Path, dict, dict[str, Tensor]]:
    """What every task's loader needs: the checkpoint that ``path`` names (its ``which`` pointer,
    else ``LATEST``), its config, checked to have been written by ``task`` (a
    :class:`CheckpointError` naming ``kind``, e.g. "a speech model", otherwise), and the model's
    tensors. Returns ``(checkpoint directory, config, tensors)``. A model trained with a kernel
    backend that does not run here (Triton on a GPU, read on a CPU) gets ``"auto"``, with a
    warning."""
    where = find_checkpoint(path, which)
    meta = load_json(where / CONFIG)
    if meta.get("task") != task:
        raise CheckpointError(f"{str(path)!r} is not {kind} (its task is {meta.get('task')!r})")
    model = meta.get("model")
    if isinstance(model, dict) and isinstance(model.get("backend"), str):
        model["backend"] = runnable_backend(model["backend"], path)
    tensors, _ = load_tensors(where / MODEL)
    return where, meta, tensors


def runnable_backend(backend: str, path: str | os.PathLike) -> str:
    """The kernel backend a model stored at ``path`` loads with: its own when it runs here, else
    ``"auto"`` with a warning (Triton kernels of a GPU run, read on a CPU)."""
    from lstm.kernels import runs_here

    if runs_here(backend):
        return backend
    warnings.warn(
        f"{str(path)!r} was trained with the {backend!r} kernel backend, which does not run "
        "here: loading it with 'auto'",
        stacklevel=3,
    )
    return "auto"


def load_json(path: str | os.PathLike) -> Any:
    """A JSON file, with a :class:`CheckpointError` naming it when it is unreadable."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"cannot read {str(path)!r}: {e}") from None


def load_tensors(path: str | os.PathLike) -> tuple[dict[str, Tensor], dict[str, str]]:
    """A safetensors file's tensors and string metadata (no pickle involved)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
        return load_file(str(path)), metadata
    except Exception as e:  # safetensors raises its own error types for corrupt files
        raise CheckpointError(f"cannot read {str(path)!r}: {e}") from None


# --------------------------------------------------------------------------------------------
# State dicts, optimizer state, nested states and RNGs as flat tensors + JSON
# --------------------------------------------------------------------------------------------


def state_dict_to_tensors(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """A module's ``state_dict`` ready for safetensors: contiguous, and tensors that share memory
    (tied weights) cloned so each name owns its data; ``load_state_dict`` ties them again."""
    out, seen = {}, set()
    for name, t in state_dict.items():
        t = t.detach().cpu()
        storage = t.untyped_storage().data_ptr() if t.numel() else None
        if storage in seen or not t.is_contiguous():
            t = t.contiguous().clone()
        seen.add(storage)
        out[name] = t
    return out


def optimizer_state_to_tensors(state: dict) -> tuple[dict[str, Tensor], dict[str, str]]:
    """A ``torch.optim`` ``state_dict()`` as safetensors ``(tensors, metadata)``: each state tensor
    under ``state.<param>.<name>``, the rest (param groups, non-tensor state) as JSON."""
    tensors: dict[str, Tensor] = {}
    entries: dict[str, dict] = {}
    for pid, per_param in state["state"].items():
        entry = {}
        for k, v in per_param.items():
            if torch.is_tensor(v):
                tensors[f"state.{pid}.{k}"] = v.detach().contiguous().cpu()
                entry[k] = {"__tensor__": f"state.{pid}.{k}"}
            else:
                entry[k] = v
        entries[str(pid)] = entry
    meta = {"param_groups": state["param_groups"], "state": entries}
    return tensors, {"optimizer": json.dumps(meta)}


def optimizer_state_from_tensors(
    tensors: Mapping[str, Tensor], metadata: Mapping[str, str]
) -> dict:
    """The inverse of :func:`optimizer_state_to_tensors`: a dict for ``optimizer.load_state_dict``."""
    meta = json.loads(metadata["optimizer"])
    state = {}
    for pid, entry in meta["state"].items():
        state[int(pid)] = {
            k: tensors[v["__tensor__"]] if isinstance(v, dict) and "__tensor__" in v else v
            for k, v in entry.items()
        }
    groups = []
    for group in meta["param_groups"]:  # JSON turned tuples (betas) into lists
        groups.append({k: tuple(v) if isinstance(v, list) and k != "params" else v
                       for k, v in group.items()})  # fmt: skip
    return {"state": state, "param_groups": groups}


def flatten_state(state: Any, prefix: str) -> tuple[dict[str, Tensor], Any]:
    """A nested state (a tensor, ``None``, or tuples/lists of them, e.g. an LSTM's ``(h, c)`` per
    layer) as flat tensors ``prefix.0, prefix.1, ...`` and a JSON structure to rebuild it."""
    tensors: dict[str, Tensor] = {}

    def walk(s):
        if s is None:
            return None
        if torch.is_tensor(s):
            key = f"{prefix}.{len(tensors)}"
            tensors[key] = s.detach().contiguous().cpu()
            return {"tensor": key}
        if isinstance(s, (tuple, list)):
            return {"seq": [walk(x) for x in s], "tuple": isinstance(s, tuple)}
        raise TypeError(f"a carried state should hold tensors, tuples or lists, got {type(s)}")

    return tensors, walk(state)


def unflatten_state(
    tensors: Mapping[str, Tensor], structure: Any, device: torch.device | str = "cpu"
) -> Any:
    """The inverse of :func:`flatten_state`."""
    if structure is None:
        return None
    if "tensor" in structure:
        return tensors[structure["tensor"]].to(device)
    items = [unflatten_state(tensors, s, device) for s in structure["seq"]]
    return tuple(items) if structure["tuple"] else items


def get_rng_state() -> dict[str, Tensor]:
    """The torch, CUDA, numpy and Python RNG states as tensors (no pickle)."""
    out = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["cuda"] = torch.cuda.get_rng_state()
    kind, keys, pos, has_gauss, cached = np.random.get_state()  # noqa: NPY002 (the global one)
    assert kind == "MT19937"
    out["numpy"] = torch.from_numpy(np.asarray(keys, dtype=np.int64))
    out["numpy_extra"] = torch.tensor([pos, has_gauss, cached], dtype=torch.float64)
    version, internal, gauss_next = random.getstate()
    out["python"] = torch.tensor([version, *internal], dtype=torch.int64)
    out["python_gauss"] = torch.tensor(
        [float("nan") if gauss_next is None else gauss_next], dtype=torch.float64
    )
    return out


def set_rng_state(state: Mapping[str, Tensor]) -> None:
    """Restores what :func:`get_rng_state` returned."""
    torch.set_rng_state(state["torch"].to(torch.uint8))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"].to(torch.uint8))
    pos, has_gauss, cached = state["numpy_extra"].tolist()
    keys = state["numpy"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, int(pos), int(has_gauss), float(cached)))  # noqa: NPY002
    values = state["python"].tolist()
    gauss = float(state["python_gauss"][0])
    random.setstate((values[0], tuple(values[1:]), None if gauss != gauss else gauss))
