"""Data-parallel training: 2 CPU processes (gloo) give the single-process result on the same
global batch; the CLI runs under torchrun with rank-0 output and checkpoints."""

import json
import os
import socket
import subprocess
import sys

import pytest
import torch
import torch.multiprocessing as mp

from lstm.checkpoint import find_checkpoint, load_json, load_tensors
from lstm.data.text import CharVocab, StreamBatches
from lstm.models.language_model import LMConfig, build_language_model, lm_loss
from lstm.training import TrainConfig, fit, read_metrics

TEXT = "Now is the winter of our discontent\nMade glorious summer by this sun of York;\n" * 8
STEPS = 6


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _setup(shard=(0, 1)):
    vocab = CharVocab.build(TEXT)
    torch.manual_seed(0)
    model = build_language_model(
        LMConfig(len(vocab), embed_size=8, hidden_size=16, backend="bptt")
    ).double()
    batches = StreamBatches(vocab.encode(TEXT), batch_size=8, seq_len=16, shard=shard)
    return model, batches


def _config():
    # Clipping and Adam: both see the averaged (global-batch) gradient.
    return TrainConfig(steps=STEPS, lr=1e-2, clip_norm=0.5, log_every=1, progress=False)


def _worker(rank, world, port, out_dir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank))  # fmt: skip
    torch.set_num_threads(1)
    from lstm.training import init_distributed

    assert init_distributed() == (rank, world)
    model, batches = _setup(shard=(rank, world))
    assert batches.inputs.shape[0] == 4  # each process holds half of the global batch of 8
    fit(model, batches, lm_loss, _config(), out_dir=out_dir, plot=lambda history, out: None)
    torch.distributed.destroy_process_group()
    # Done, and all written: leave without the interpreter's teardown. Rarely (seen twice, in
    # different sessions, in this project's full test runs) a spawned worker died of SIGABRT with
    # "terminate called without an active exception", the sign of a std::thread destroyed while
    # running: likely gloo's threads against the interpreter's finalization (the race
    # pytorch/pytorch#179291 describes). The training this test checks is finished by then.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def test_two_processes_match_one_on_the_same_global_batch(tmp_path):
    torch.set_num_threads(1)
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path / "ddp")), nprocs=2, join=True)

    model, batches = _setup()
    single = fit(model, batches, lm_loss, _config())

    ddp_weights, _ = load_tensors(find_checkpoint(tmp_path / "ddp") / "model.safetensors")
    for name, p in model.state_dict().items():
        # float64; the only difference is the order of the gradient sums: 1e-10 is far below
        # any training effect (one step changes the weights by ~1e-2).
        torch.testing.assert_close(ddp_weights[name], p, rtol=1e-10, atol=1e-10, msg=name)
    ddp_log = read_metrics(tmp_path / "ddp" / "metrics.jsonl")
    assert [m["step"] for m in ddp_log] == list(range(1, STEPS + 1))
    for a, b in zip(ddp_log, single.history):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-10)  # the global mean, all-reduced
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-8)
        assert a["items"] == b["items"]
    meta = load_json(find_checkpoint(tmp_path / "ddp") / "config.json")
    assert meta["progress"]["step"] == STEPS


@pytest.mark.slow
def test_the_cli_runs_under_torchrun(tmp_path):
    text = tmp_path / "verse.txt"
    text.write_text(TEXT * 4, encoding="utf-8")
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", "--nproc_per_node=2",
           "--master_addr=127.0.0.1", f"--master_port={_free_port()}", "-m", "lstm.cli",
           "train", "lm", "--text", str(text), "--steps", "3", "--hidden", "16", "--embed", "8",
           "--batch", "4", "--seq-len", "16", "--samples", "1", "--sample-length", "20",
           "--threads", "1", "--no-progress", "--out", str(out)]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("[lm] held-out bits per character") == 1  # rank 0 alone reports
    assert "2 processes" in proc.stdout
    results = json.loads((out / "results.json").read_text())
    assert results["processes"] == 2 and results["steps"] == 3
    trainer = load_tensors(find_checkpoint(out) / "trainer.safetensors")[1]
    assert trainer["world_size"] == "2"
