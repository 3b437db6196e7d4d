"""Checkpoints: atomic under a kill at every write step, optimizer/RNG/state round trips, no pickle."""

import json
import os
import pickle
import random
import signal

import numpy as np
import pytest
import torch
from torch import nn

from lstm import checkpoint as ckpt


def _tensors(value):
    return {"a": torch.full((64, 64), float(value)), "b": torch.arange(1000) * value}


def _write(root, name, value, keep=2, best=False, tensors=None):
    tensors = tensors if tensors is not None else _tensors(value)
    return ckpt.write_checkpoint(
        root,
        name,
        tensors={ckpt.MODEL: (tensors, {"value": str(value)})},
        jsons={ckpt.CONFIG: {"value": value, "pad": "x" * 5000}},
        keep=keep,
        best=best,
    )


def _read(root):
    path = ckpt.find_checkpoint(root)
    tensors, meta = ckpt.load_tensors(path / ckpt.MODEL)
    config = ckpt.load_json(path / ckpt.CONFIG)
    value = config["value"]
    # Complete and consistent: every part holds the same checkpoint's data.
    assert meta["value"] == str(value)
    assert torch.equal(tensors["a"], torch.full((64, 64), float(value)))
    assert torch.equal(tensors["b"], torch.arange(1000) * value)
    assert path.name == f"step-{value}"
    return value


def _killed_child(root, kill_at):
    """Forks a process that writes checkpoint 2 and SIGKILLs itself at its ``kill_at``-th file
    system step (each fsync, rename, replace, and in the middle of writing a tensor file)."""
    tensors = _tensors(2)  # made here: the forked child does no tensor arithmetic
    pid = os.fork()
    if pid == 0:  # the child
        calls = [0]

        def maybe_die():
            calls[0] += 1
            if calls[0] == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)

        def wrap(fn):
            def wrapped(*args, **kwargs):
                maybe_die()
                return fn(*args, **kwargs)

            return wrapped

        real_save = ckpt.save_file

        def half_written_save(tensors, filename, metadata=None):
            real_save(tensors, filename, metadata=metadata)
            size = os.path.getsize(filename)
            with open(filename, "r+b") as f:  # as if killed half way through the write
                f.truncate(size // 2)
            maybe_die()
            real_save(tensors, filename, metadata=metadata)

        os.fsync = wrap(os.fsync)
        os.rename = wrap(os.rename)
        os.replace = wrap(os.replace)
        ckpt.save_file = half_written_save
        try:
            _write(root, "step-2", 2, tensors=tensors)
        finally:
            os._exit(0 if calls[0] < kill_at else 3)
    _, status = os.waitpid(pid, 0)
    return os.WIFSIGNALED(status)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_kill_at_any_step_of_a_write_leaves_the_last_good_checkpoint(tmp_path):
    kills = 0
    for kill_at in range(1, 40):
        root = tmp_path / f"run{kill_at}"
        _write(root, "step-1", 1)
        killed = _killed_child(root, kill_at)
        value = _read(root)  # loadable and consistent, whatever the moment of the kill
        if not killed:
            assert value == 2  # the write finished
            break
        kills += 1
        assert value in (1, 2)
        # The next write cleans up whatever the killed one left and succeeds.
        _write(root, "step-3", 3)
        assert _read(root) == 3
        assert not [p for p in root.iterdir() if p.name.startswith(ckpt.TMP_PREFIX)]
    # Killed at each of the 9 steps: mid tensor file, its fsync, the JSON's fsync, the directory's
    # fsync, its rename, the parent's fsync, LATEST's fsync, its replace, the parent's fsync.
    assert kills == 9


def test_latest_best_and_pruning(tmp_path):
    root = tmp_path / "checkpoints"
    _write(root, "step-1", 1, best=True)
    for k in range(2, 6):
        _write(root, f"step-{k}", k, keep=2)
    names = sorted(p.name for p in root.iterdir() if p.is_dir())
    assert names == ["step-1", "step-4", "step-5"]  # newest two, and the best
    assert _read(root) == 5
    assert ckpt.find_checkpoint(root, "BEST").name == "step-1"
    assert ckpt.find_checkpoint(tmp_path).name == "step-5"  # the run directory works too
    assert ckpt.find_checkpoint(root / "step-4").name == "step-4"


def test_find_checkpoint_errors(tmp_path):
    with pytest.raises(ckpt.CheckpointError, match="does not exist"):
        ckpt.find_checkpoint(tmp_path / "nope")
    with pytest.raises(ckpt.CheckpointError, match="is not a checkpoint"):
        ckpt.find_checkpoint(tmp_path)
    (tmp_path / "x.bin").write_bytes(b"junk")
    with pytest.raises(ckpt.CheckpointError, match="is a file"):
        ckpt.find_checkpoint(tmp_path / "x.bin")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / ckpt.CONFIG).write_text("{}")
    (bad / ckpt.MODEL).write_bytes(b"not safetensors at all")
    with pytest.raises(ckpt.CheckpointError, match="cannot read"):
        ckpt.load_tensors(bad / ckpt.MODEL)


@pytest.mark.parametrize("kind", ["adam", "sgd", "rmsprop"])
def test_optimizer_state_round_trips_through_safetensors(tmp_path, kind):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3))
    make = {
        "adam": lambda p: torch.optim.Adam(p, 1e-2, betas=(0.8, 0.95)),
        "sgd": lambda p: torch.optim.SGD(p, 1e-2, momentum=0.9, nesterov=True),
        "rmsprop": lambda p: torch.optim.RMSprop(p, 1e-2, momentum=0.5),
    }[kind]
    opt = make(model.parameters())
    for _ in range(3):
        opt.zero_grad()
        model(torch.randn(4, 5)).square().sum().backward()
        opt.step()
    tensors, meta = ckpt.optimizer_state_to_tensors(opt.state_dict())
    ckpt.save_file(tensors, str(tmp_path / "o.safetensors"), metadata=meta)
    loaded, loaded_meta = ckpt.load_tensors(tmp_path / "o.safetensors")
    restored = ckpt.optimizer_state_from_tensors(loaded, loaded_meta)
    opt2 = make(model.parameters())
    opt2.load_state_dict(restored)
    a, b = opt.state_dict(), opt2.state_dict()
    assert a["param_groups"] == b["param_groups"]
    for pid in a["state"]:
        for k, v in a["state"][pid].items():
            assert torch.equal(torch.as_tensor(v), torch.as_tensor(b["state"][pid][k])), (pid, k)


def test_nested_state_and_rng_round_trip():
    state = [(torch.randn(2, 3, 4), torch.randn(2, 3, 4)), torch.randn(1, 3, 5), None]
    tensors, structure = ckpt.flatten_state(state, "state")
    back = ckpt.unflatten_state(tensors, json.loads(json.dumps(structure)))
    assert isinstance(back, list) and isinstance(back[0], tuple) and back[2] is None
    assert all(torch.equal(x, y) for x, y in zip([*back[0], back[1]], [*state[0], state[1]]))

    random.gauss(0, 1)  # leave a cached Gaussian in Python's generator
    saved = ckpt.get_rng_state()
    first = (
        torch.rand(5),
        np.random.rand(5),  # noqa: NPY002 (the global generator is what is restored)
        [random.random() for _ in range(3)],
        random.gauss(0, 1),
    )
    ckpt.set_rng_state(saved)
    again = (
        torch.rand(5),
        np.random.rand(5),  # noqa: NPY002 (the global generator is what is restored)
        [random.random() for _ in range(3)],
        random.gauss(0, 1),
    )
    assert torch.equal(first[0], again[0])
    assert np.array_equal(first[1], again[1])
    assert first[2] == again[2] and first[3] == again[3]


def test_tied_weights_save_and_load_without_pickle(tmp_path, monkeypatch):
    emb = nn.Embedding(10, 4)
    head = nn.Linear(4, 10)
    head.weight = emb.weight
    model = nn.ModuleDict({"emb": emb, "head": head})
    tensors = ckpt.state_dict_to_tensors(model.state_dict())
    ckpt.save_file(tensors, str(tmp_path / "m.safetensors"))

    def no_pickle(*args, **kwargs):
        raise AssertionError("loading a checkpoint must not unpickle")

    monkeypatch.setattr(pickle, "load", no_pickle)
    monkeypatch.setattr(pickle, "loads", no_pickle)
    monkeypatch.setattr(torch, "load", no_pickle)
    loaded, _ = ckpt.load_tensors(tmp_path / "m.safetensors")
    other = nn.ModuleDict({"emb": nn.Embedding(10, 4), "head": nn.Linear(4, 10)})
    other["head"].weight = other["emb"].weight
    other.load_state_dict(loaded)
    assert torch.equal(other["emb"].weight, emb.weight)
    assert other["head"].weight is other["emb"].weight


def test_load_task_checkpoint_picks_best_checks_the_task_and_loads_tensors(tmp_path):
    root = tmp_path / "run" / "checkpoints"
    for k, best in ((1, True), (2, False)):
        ckpt.write_checkpoint(root, f"step-{k}", tensors={ckpt.MODEL: (_tensors(k), None)},
                              jsons={ckpt.CONFIG: {"task": "speech", "step": k}},
                              best=best)  # fmt: skip
    where, meta, tensors = ckpt.load_task_checkpoint(tmp_path / "run", "speech", "a speech model")
    assert where.name == "step-1" and meta["step"] == 1
    torch.testing.assert_close(tensors, _tensors(1))
    _, meta, _ = ckpt.load_task_checkpoint(root, "speech", "a speech model", which="LATEST")
    assert meta["step"] == 2
    with pytest.raises(
        ckpt.CheckpointError, match="is not a forecaster \\(its task is 'speech'\\)"
    ):
        ckpt.load_task_checkpoint(root, "forecast", "a forecaster")


def test_a_model_trained_with_a_backend_this_machine_lacks_loads_with_auto(tmp_path):
    """A checkpoint from a GPU run (its kernels absent here) still loads, on 'auto', with a
    warning; one whose backend runs here keeps it."""
    for backend in ("gpu-only-kernels", "bptt"):
        config = {"task": "speech", "model": {"backend": backend}}
        ckpt.write_checkpoint(tmp_path / backend, "step-1", jsons={ckpt.CONFIG: config},
                              tensors={ckpt.MODEL: (_tensors(1), None)})  # fmt: skip
    with pytest.warns(UserWarning, match="'gpu-only-kernels' kernel backend, which does not run"):
        _, meta, _ = ckpt.load_task_checkpoint(tmp_path / "gpu-only-kernels", "speech", "a model")
    assert meta["model"]["backend"] == "auto"
    _, meta, _ = ckpt.load_task_checkpoint(tmp_path / "bptt", "speech", "a model")
    assert meta["model"]["backend"] == "bptt"


def test_a_language_model_from_a_machine_with_other_kernels_loads_with_auto_and_says_so(
    tmp_path, monkeypatch
):
    """load_language_model, like the task loaders, warns when it swaps an unrunnable backend
    for 'auto' (it used to swap silently)."""
    import lstm.kernels
    from lstm.data.text import CharVocab
    from lstm.models.language_model import LMConfig, build_language_model, load_language_model

    monkeypatch.setattr(lstm.kernels, "runs_here", lambda name: name != "triton")  # a CPU machine
    vocab = CharVocab.build("abc")
    config = LMConfig(vocab_size=len(vocab), embed_size=4, hidden_size=5)
    model = build_language_model(config)
    stored = {**config.to_json(), "backend": "triton"}
    ckpt.write_checkpoint(tmp_path, "step-1",
                          jsons={ckpt.CONFIG: {"task": "lm", "model": stored,
                                               "vocab": vocab.to_json()}},
                          tensors={ckpt.MODEL: (ckpt.state_dict_to_tensors(model.state_dict()),
                                                None)})  # fmt: skip
    with pytest.warns(UserWarning, match="'triton' kernel backend, which does not run here"):
        loaded, _, _ = load_language_model(tmp_path)
    assert loaded.config.backend == "auto"
