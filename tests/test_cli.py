"""The `lstm` command: a user's mistakes are one line on stderr and exit status 2, never a
traceback; a small end-to-end run of train lm, evaluate, generate and next-word."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lstm.cli import main
from lstm.training import read_metrics

VERSE = (
    "Once upon a midnight dreary, while I pondered, weak and weary,\n"
    "Over many a quaint and curious volume of forgotten lore,\n"
    "While I nodded, nearly napping, suddenly there came a tapping,\n"
    "As of some one gently rapping, rapping at my chamber door.\n"
)


pytestmark = pytest.mark.usefixtures("one_thread")


def _fails(capsys, argv, message):
    """Runs the CLI; asserts exit status 2 and exactly one stderr line holding ``message``."""
    status = main(argv)
    err = capsys.readouterr().err
    assert status == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("lstm: error: ") and message in lines[0], lines[0]
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny character model trained for a few steps through the CLI."""
    root = tmp_path_factory.mktemp("cli")
    text = root / "poem.txt"
    text.write_text(VERSE * 20, encoding="utf-8")
    out = root / "run"
    status = main(["train", "lm", "--text", str(text), "--steps", "120", "--hidden", "32",
                   "--embed", "16", "--batch", "8", "--seq-len", "32", "--lr", "1e-2", "--samples",
                   "1", "--sample-length", "40", "--no-progress", "--out", str(out)])  # fmt: skip
    assert status == 0
    return root, text, out


def test_train_lm_reports_and_writes_everything(trained, capsys):
    _, _, out = trained
    results = json.loads((out / "results.json").read_text())
    assert results["steps"] == 120
    assert results["test_bpc"] < 3.5  # from log2(35) = 5.1 bits at the start
    assert (out / "curves.png").stat().st_size > 10_000
    assert (out / "metrics.jsonl").exists()
    assert (out / "checkpoints" / "LATEST").read_text().strip() == "step-00000120"


def test_generate_evaluate_next_word(trained, capsys):
    _, text, out = trained
    assert (
        main(["generate", str(out), "--prompt", "Once upon", "--length", "30", "--top-k", "5"]) == 0
    )
    printed = capsys.readouterr().out
    assert printed.startswith("Once upon") and len(printed.strip()) >= len("Once upon") + 20
    assert main(["evaluate", str(out), "--text", str(text)]) == 0
    printed = capsys.readouterr().out
    assert "bits per character" in printed
    bpc = float(printed.split("bits per character")[1].split()[0])
    assert 0 < bpc < 3.5
    assert main(["evaluate", str(out)]) == 0  # the run's own test part
    assert "test part" in capsys.readouterr().out
    # Dynamic evaluation on the repeated verse: the adapted model reads the repeats better.
    argv = ["evaluate", str(out), "--text", str(text), "--dynamic", "--no-progress"]
    assert main([*argv, "--dynamic-lr", "0"]) == 0
    single = float(capsys.readouterr().out.split("bits per character")[-1].split()[0])
    assert single == pytest.approx(bpc, abs=0.02)  # static, one stream against 16
    assert main([*argv, "--dynamic-lr", "0.03", "--dynamic-seq-len", "16"]) == 0
    printed = capsys.readouterr().out
    assert "dynamic evaluation (one stream, a step of lr 0.03 after each 16 tokens" in printed
    # measured: 1.318 against 1.373 (a small model and 4,840 characters: a small gain)
    assert float(printed.split("bits per character")[-1].split()[0]) < single - 0.03
    assert main(["next-word", str(out), "--prompt", "rapping at my chamber", "--top", "3"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 4  # a heading and three words with probabilities
    assert all(0 < float(line.split()[1]) <= 1 for line in lines[1:])


def test_resume_a_finished_run_with_more_steps(trained, capsys):
    _, text, out = trained
    status = main(["train", "lm", "--text", str(text), "--steps", "125", "--hidden", "32",
                   "--embed", "16", "--batch", "8", "--seq-len", "32", "--lr", "1e-2",
                   "--samples", "0", "--no-progress", "--out", str(out), "--resume"])  # fmt: skip
    assert status == 0
    assert json.loads((out / "results.json").read_text())["steps"] == 125


def test_train_lm_with_dynamic_evaluation_and_weight_averaging(trained, tmp_path, capsys):
    _, text, _ = trained
    out = tmp_path / "dyn"
    status = main(["train", "lm", "--text", str(text), "--steps", "40", "--hidden", "32",
                   "--embed", "16", "--batch", "8", "--seq-len", "32", "--lr", "1e-2",
                   "--samples", "0", "--no-progress", "--dynamic", "--dynamic-lr", "0.03",
                   "--average", "ema", "--ema-decay", "0.9", "--out", str(out)])  # fmt: skip
    assert status == 0
    printed = capsys.readouterr().out
    assert "[lm] test with dynamic evaluation (one stream, a step of lr 0.03 after each" in printed
    results = json.loads((out / "results.json").read_text())
    assert results["dynamic_evaluation"]["lr"] == 0.03
    assert 0 < results["test_bpc_dynamic"] < 6
    averaged = [m for m in read_metrics(out / "metrics.jsonl") if m["split"] == "val"][-1]
    assert averaged["averaged"] == 21  # steps 20 to 40: those at or past half of the run


def test_file_errors(tmp_path, capsys):
    _fails(capsys, ["train", "lm", "--text", str(tmp_path / "missing.txt")], "does not exist")
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    _fails(capsys, ["train", "lm", "--text", str(empty)], "is empty")
    binary = tmp_path / "image.png"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00")
    _fails(capsys, ["train", "lm", "--text", str(binary)], "looks binary")
    latin = tmp_path / "latin1.txt"
    latin.write_bytes("na\u00efve caf\u00e9\n".encode("latin-1") * 50)
    _fails(capsys, ["train", "lm", "--text", str(latin)], "is not valid UTF-8")
    _fails(capsys, ["train", "lm", "--text", str(tmp_path)], "is a directory")
    short = tmp_path / "short.txt"
    short.write_text("hi\n")
    _fails(capsys, ["train", "lm", "--text", str(short)], "too short")


def test_checkpoint_errors(tmp_path, trained, capsys):
    _, _, out = trained
    _fails(capsys, ["generate", str(tmp_path / "nowhere")], "does not exist")
    _fails(capsys, ["generate", str(tmp_path)], "is not a checkpoint")
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "config.json").write_text("{not json")
    (junk / "model.safetensors").write_bytes(b"\x00" * 16)
    _fails(capsys, ["evaluate", str(junk)], "cannot read")
    _fails(
        capsys, ["evaluate", str(out), "--text", str(tmp_path / "missing.txt")], "does not exist"
    )
    _fails(capsys, ["evaluate", str(out), "--dynamic", "--dynamic-decay", "1"],
           "argument --dynamic-decay: should be below 1, got 1.0")  # fmt: skip


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["train", "lm", "--hidden", "-3"],
            "argument --hidden: should be a positive integer, got '-3'",
        ),
        (["train", "lm", "--cell", "tcn"], "argument --cell: invalid choice: 'tcn'"),
        (
            ["train", "lm", "--dropout", "1.5"],
            "argument --dropout: should be a number in [0, 1), got '1.5'",
        ),
        (["train", "lm", "--backend", "warp"], "argument --backend: should be one of auto, torch"),
        (
            ["train", "lm", "--minutes", "0"],
            "argument --minutes: should be a positive number, got '0'",
        ),
        (
            ["train", "lm", "--cell", "transformer", "--seq-len", "256"],
            "longer than the transformer's --context 128",
        ),
        (
            ["train", "lm", "--device", "tpu"],
            "argument --device: should be cpu or cuda[:N], got 'tpu'",
        ),
        (["train", "lm", "--bogus"], "unrecognized arguments: --bogus"),
        (
            ["train", "lm", "--cell", "transformer", "--dynamic"],
            "argument --dynamic: for recurrent language models, not a Transformer",
        ),
        (
            ["train", "lm", "--average", "swa", "--average-start", "1"],
            "argument --average-start: should be below 1, got 1.0",
        ),
        (["train", "poetry"], "argument TASK: invalid choice: 'poetry'"),  # not a task
        (["train"], "give a TASK: one of lm"),
        ([], "give a COMMAND"),
        (
            ["generate", "x", "--top-p", "2"],
            "argument --top-p: should be a number in (0, 1], got '2'",
        ),
        (
            ["generate", "x", "--temperature", "-1"],
            "argument --temperature: should be a number >= 0",
        ),
    ],
)
def test_invalid_options(capsys, argv, message):
    _fails(capsys, argv, message)


def test_the_console_script_exits_2_without_a_traceback(tmp_path):
    script = Path(sys.executable).parent / "lstm"
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "lstm.cli"]
    proc = subprocess.run([*cmd, "evaluate", str(tmp_path / "none")], capture_output=True,
                          text=True, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "does not exist" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("level", [["--level", "word", "--min-count", "1"],
                                   ["--level", "bpe", "--vocab-size", "300"]])  # fmt: skip
def test_word_and_bpe_language_models(tmp_path, capsys, level):
    text = tmp_path / "poem.txt"
    text.write_text(VERSE * 20, encoding="utf-8")
    out = tmp_path / "run"
    argv = ["train", "lm", "--text", str(text), "--steps", "30", "--hidden", "32", "--embed",
            "16", "--batch", "4", "--seq-len", "16", "--lr", "1e-2", "--samples", "1",
            "--sample-length", "10", "--no-progress", "--out", str(out), *level]  # fmt: skip
    assert main(argv) == 0
    results = json.loads((out / "results.json").read_text())
    # Fewer tokens than characters: the bits of each token spread over its characters.
    assert results["test_tokens"] < 0.6 * len(VERSE * 20) * 0.05
    assert 0 < results["test_bpc"] < 4.0
    capsys.readouterr()
    assert main(["next-word", str(out), "--prompt", "rapping at my chamber", "--top", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()[1:]
    words = [line.split()[0].strip("'") for line in lines]
    probs = [float(line.split()[1]) for line in lines]
    assert len(words) == 3 and all(words) and 0 < sum(probs) <= 1
    if level[1] == "word":
        assert "door" in words  # learned from 20 repetitions of the verse


def test_bench_finds_the_benchmarks_and_reports_no_gpu(capsys, monkeypatch, tmp_path):
    """`lstm bench gpu` from any directory finds the repository's benchmarks; without CUDA it
    says so in one line and exits 2."""

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present: the GPU benchmark would run")
    monkeypatch.chdir(tmp_path)
    assert main(["bench", "gpu"]) == 2
    err = capsys.readouterr()
    assert "CUDA" in (err.out + err.err)
