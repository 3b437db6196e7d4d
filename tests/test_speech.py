"""Speech: features against hand-computed values (mel filters, a pure tone's spectrum), CTC
decoding on hand-made posteriors (and beam search against brute force and greedy), the edit
distance, WAV loader errors on files the tests write, the synthesized data builder, a short
training run that must beat a bar, and the CLI's one-line errors."""

import itertools
import json
import math
import subprocess
import wave

import numpy as np
import pytest
import torch

from lstm.cli import main
from lstm.data.audio import (
    TEST_VARIANTS,
    VAL_VARIANTS,
    VARIANTS,
    AudioFileError,
    build_digits,
    build_keywords,
    missing_tools,
    read_wav,
    trim_silence,
    voice_split,
    voices,
    write_wav,
)
from lstm.data.features import (
    FeatureConfig,
    dct_matrix,
    extract,
    hz_to_mel,
    log_mel,
    mel_filterbank,
    mel_to_hz,
)
from lstm.decoding import ctc_greedy, ctc_prefix_beam_search, edit_distance, token_error_rate
from lstm.models.speech import SpeechConfig, build_speech_model, stack_frames

needs_tools = pytest.mark.skipif(
    bool(missing_tools()),
    reason=f"speech synthesis needs {', '.join(missing_tools())} (scripts/setup.sh installs them)",
)

# --------------------------------------------------------------------------------------------
# Features
# --------------------------------------------------------------------------------------------


def test_mel_scale_known_value_and_round_trip():
    assert hz_to_mel(700.0) == pytest.approx(2595 * math.log10(2), abs=1e-9)  # 781.17
    assert hz_to_mel(0.0) == 0.0
    f = torch.tensor([0.0, 100.0, 1000.0, 7600.0], dtype=torch.float64)
    assert torch.allclose(mel_to_hz(hz_to_mel(f)), f, atol=1e-9)


def test_mel_filter_values_by_hand():
    # 16 kHz, n_fft 16: bins at 0, 1000, ..., 8000 Hz. One filter over [0, 8000] Hz:
    # mel(8000) = 2595 log10(1 + 8000/700) = 2840.023; the centre is mel 1420.012, i.e.
    # 700 (10^(1420.012/2595) - 1) = 1767.79 Hz. Rising edge at 1000 Hz: 1000 / 1767.79 = 0.56568;
    # falling edge at 2000 Hz: (8000 - 2000) / (8000 - 1767.79) = 0.96274.
    w = mel_filterbank(1, 16, 16000)
    assert w.shape == (1, 9)
    assert w[0, 0] == 0.0
    assert w[0, 1].item() == pytest.approx(0.56568, abs=1e-5)
    assert w[0, 2].item() == pytest.approx(0.96274, abs=1e-5)
    assert w[0, 8].item() == pytest.approx(0.0, abs=1e-12)
    # 40 filters: each rises from its left neighbour's centre and falls to its right one's, so
    # between the first and the last centre the triangles overlap to a partition of unity
    fb = mel_filterbank(40, 512, 16000, 20.0, 7600.0)
    assert fb.shape == (40, 257)
    assert float(fb.min()) >= 0.0
    mels = torch.linspace(hz_to_mel(20.0), hz_to_mel(7600.0), 42, dtype=torch.float64)
    centres = mel_to_hz(mels)
    freqs = torch.arange(257, dtype=torch.float64) * 16000 / 512
    inside = (freqs >= centres[1]) & (freqs <= centres[40])
    assert int(inside.sum()) > 200
    torch.testing.assert_close(fb[:, inside].double().sum(0), torch.ones(int(inside.sum()),
                               dtype=torch.float64), rtol=0, atol=1e-5)  # fmt: skip


def test_pure_tone_spectrum_by_hand():
    # 1000 Hz at 16 kHz with a 400-sample periodic Hann window and n_fft 400 (40 Hz bins): the
    # window holds 25 whole cycles, so |X| is exactly A·N/4 = 100 at bin 25 (1000 Hz) and
    # A·N/8 = 50 at bins 24 and 26 (960, 1040 Hz), 0 elsewhere. Power: 10^4 and 2500.
    config = FeatureConfig(n_fft=400, win_length=400, hop_length=160, n_mels=40, norm="none")
    t = torch.arange(16000, dtype=torch.float64) / 16000
    tone = torch.sin(2 * math.pi * 1000 * t)
    frames = log_mel(tone, config)  # (T, 40)
    assert frames.shape == (1 + (16000 - 400) // 160, 40)
    fb = mel_filterbank(40, 400, 16000, config.f_min, config.f_max)
    energy = fb[:, 24] * 2500 + fb[:, 25] * 10_000 + fb[:, 26] * 2500  # (40,)
    expected = torch.log(energy + 1e-6).float()
    assert (frames - expected).abs().max().item() < 1e-3
    # the peak is the filter whose centre is nearest 1000 Hz; far filters see nothing
    centres = mel_to_hz(torch.linspace(hz_to_mel(20.0), hz_to_mel(7600.0), 42))[1:-1]
    nearest = int((centres - 1000).abs().argmin())
    assert int(frames.mean(0).argmax()) == nearest
    assert frames[:, 35].max().item() < math.log(1e-6) + 0.01
    # a 3000 Hz tone peaks at the filter nearest 3000 Hz
    high = log_mel(torch.sin(2 * math.pi * 3000 * t), config)
    assert int(high.mean(0).argmax()) == int((centres - 3000).abs().argmin())


def test_mfcc_dct_is_orthonormal_and_maps_a_constant_to_c0():
    d = dct_matrix(40, 40)
    assert torch.allclose(d @ d.T, torch.eye(40, dtype=torch.float64), atol=1e-12)
    constant = torch.full((1, 40), 2.0, dtype=torch.float64)
    c = constant @ dct_matrix(13, 40).T
    assert c[0, 0].item() == pytest.approx(2.0 * math.sqrt(40), abs=1e-12)
    assert c[0, 1:].abs().max().item() < 1e-12


def test_features_shape_and_utterance_normalization():
    rng = np.random.default_rng(0)
    x = rng.standard_normal(8000).astype(np.float32) * 0.1
    mfcc = extract(x, FeatureConfig(kind="mfcc"))
    assert mfcc.shape == (1 + (8000 - 512) // 160, 13)  # T = 1 + (N - n_fft) // hop
    assert mfcc.mean(0).abs().max().item() < 1e-5
    assert (mfcc.std(0, unbiased=False) - 1).abs().max().item() < 1e-3
    short = extract(np.zeros(10, np.float32), FeatureConfig())  # shorter than a window: 1 frame
    assert short.shape == (1, 40)
    with pytest.raises(ValueError, match="norm should be"):
        FeatureConfig(norm="cmvn")


# --------------------------------------------------------------------------------------------
# CTC decoding and edit distance
# --------------------------------------------------------------------------------------------


def _posteriors(rows: list[list[float]]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64).log()


def test_greedy_collapses_repeats_and_removes_blanks():
    # best path  a a - a b b -  (blank 0, a = 1, b = 2)  ->  a a b
    hot = {0: [0.8, 0.1, 0.1], 1: [0.1, 0.8, 0.1], 2: [0.1, 0.1, 0.8]}
    lp = _posteriors([hot[k] for k in (1, 1, 0, 1, 2, 2, 0)])
    assert ctc_greedy(lp) == [1, 1, 2]
    labels, _ = ctc_prefix_beam_search(lp, beam=4)
    assert labels == [1, 1, 2]


def test_beam_finds_the_labeling_greedy_misses():
    # Two frames, P(blank) = 0.6, P(a) = 0.4 at each. Best path: blank blank -> "" (0.36). But
    # "a" has three paths: a a, a -, - a: 0.16 + 0.24 + 0.24 = 0.64.
    lp = _posteriors([[0.6, 0.4], [0.6, 0.4]])
    assert ctc_greedy(lp) == []
    labels, score = ctc_prefix_beam_search(lp, beam=4)
    assert labels == [1]
    assert score == pytest.approx(math.log(0.64), abs=1e-12)


def _brute_force(lp: torch.Tensor) -> dict[tuple, float]:
    """Every labeling's probability, summing every path (V^T of them)."""
    probs = lp.exp()
    T, V = probs.shape
    out: dict[tuple, float] = {}
    for path in itertools.product(range(V), repeat=T):
        labeling, previous = [], None
        for s in path:
            if s != previous and s != 0:
                labeling.append(s)
            previous = s
        p = math.prod(float(probs[t, s]) for t, s in enumerate(path))
        out[tuple(labeling)] = out.get(tuple(labeling), 0.0) + p
    return out


@pytest.mark.parametrize("seed", range(5))
def test_beam_search_is_exact_with_a_wide_beam(seed):
    g = torch.Generator().manual_seed(seed)
    lp = (torch.randn(5, 3, generator=g, dtype=torch.float64) * 1.5).log_softmax(-1)
    truth = _brute_force(lp)
    best = max(truth, key=truth.get)
    labels, score = ctc_prefix_beam_search(lp, beam=1000)
    assert tuple(labels) == best
    assert score == pytest.approx(math.log(truth[best]), abs=1e-10)
    # the same number from torch's CTC loss (the negative log-likelihood of the labeling)
    if labels:
        nll = torch.nn.functional.ctc_loss(lp, torch.tensor([labels]), (5,), (len(labels),),
                                           reduction="sum")  # fmt: skip
        assert -nll.item() == pytest.approx(score, abs=1e-10)
    greedy = tuple(ctc_greedy(lp))
    assert truth[best] >= truth.get(greedy, 0.0) - 1e-15


def test_beam_search_beats_greedy_on_a_toy_model():
    # a toy "model": a random linear map over random inputs, softened so paths compete; over
    # many utterances the beam's labelings are never less probable than greedy's and sometimes more
    g = torch.Generator().manual_seed(0)
    weight = torch.randn(4, 3, generator=g, dtype=torch.float64) * 0.7
    wins = 0
    for _ in range(30):
        lp = (torch.randn(5, 4, generator=g, dtype=torch.float64) @ weight).log_softmax(-1)
        truth = _brute_force(lp)
        beam = tuple(ctc_prefix_beam_search(lp, beam=16)[0])
        greedy = tuple(ctc_greedy(lp))
        assert truth[beam] >= truth.get(greedy, 0.0) - 1e-15
        wins += truth[beam] > truth.get(greedy, 0.0) + 1e-12
    assert wins >= 5, wins


def test_decoders_reject_bad_input():
    with pytest.raises(ValueError, match=r"log_probs should be \(T, V\)"):
        ctc_greedy(torch.zeros(3))
    with pytest.raises(ValueError, match="beam should be at least 1"):
        ctc_prefix_beam_search(torch.zeros(2, 3), beam=0)
    with pytest.raises(ValueError, match="blank should be in"):
        ctc_greedy(torch.zeros(2, 3), blank=3)


def test_edit_distance_by_hand():
    assert edit_distance("kitten", "sitting") == 3  # k->s, e->i, +g
    assert edit_distance([], [1, 2]) == 2
    assert edit_distance([1, 2], []) == 2
    assert edit_distance([1, 2, 3], [1, 3]) == 1
    assert edit_distance([1, 2, 3], [3, 2, 1]) == 2
    assert edit_distance("abc", "abc") == 0
    # (1 + 2) errors over 4 reference tokens
    assert token_error_rate([[1, 2, 3], [4]], [[1, 3], [5, 6]]) == pytest.approx(0.75)
    with pytest.raises(ValueError, match="pair up"):
        token_error_rate([[1]], [])
    with pytest.raises(ValueError, match="no tokens"):
        token_error_rate([[]], [[1]])


# --------------------------------------------------------------------------------------------
# WAV files
# --------------------------------------------------------------------------------------------


def _wav(path, rate=16000, channels=1, width=2, frames=1600):
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(b"\x01\x00" * (frames * channels * width // 2))
    return path


def test_wav_round_trip(tmp_path):
    x = np.sin(np.arange(1600) / 5).astype(np.float32) * 0.5
    write_wav(tmp_path / "a.wav", x)
    y = read_wav(tmp_path / "a.wav")
    assert y.dtype == np.float32 and y.shape == (1600,)
    assert np.abs(y - x).max() <= 0.5 / 32768 + 1e-7


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: _wav(p, rate=8000), "sample rate of 8000 Hz; 16000 Hz is needed"),
        (lambda p: _wav(p, rate=44100), "sample rate of 44100 Hz"),
        (lambda p: _wav(p, channels=2), "has 2 channels; a mono file is needed"),
        (lambda p: _wav(p, width=1), "has 8-bit samples; 16-bit PCM is needed"),
        (lambda p: _wav(p, frames=0), "is empty"),
        (lambda p: p.write_text("not audio at all"), "is not a readable WAV file"),
        (lambda p: p.write_bytes(_wav(p).read_bytes()[:30]), "is not a readable WAV file"),
    ],
)
def test_wav_errors_name_the_file_and_the_value(tmp_path, make, message):
    path = tmp_path / "clip.wav"
    make(path)
    with pytest.raises(AudioFileError, match=message) as e:
        read_wav(path)
    assert str(path) in str(e.value)
    assert isinstance(e.value, ValueError)


def test_wav_missing_and_truncated(tmp_path):
    with pytest.raises(AudioFileError, match="does not exist"):
        read_wav(tmp_path / "none.wav")
    path = _wav(tmp_path / "t.wav", frames=1600)
    data = path.read_bytes()
    path.write_bytes(data[:-1000])  # the header still says 1600 samples
    with pytest.raises(AudioFileError, match="truncated"):
        read_wav(path)


def test_trim_silence_by_hand():
    # 0.1 s of silence, 0.2 s of a 0.5-amplitude tone, 0.1 s of silence: the 20 ms RMS turns
    # loud at the tone's first sample (sqrt(0.25 / 320) = 0.028 >= 0.01) and, read backwards, at
    # its last: exactly the tone is kept
    tone = 0.5 * np.cos(2 * np.pi * 440 * np.arange(3200) / 16000)
    x = np.concatenate([np.zeros(1600), tone, np.zeros(1600)]).astype(np.float32)
    trimmed = trim_silence(x)
    assert len(trimmed) == 3200
    assert np.array_equal(trimmed, x[1600:4800])
    quiet = np.full(800, 0.001, np.float32)  # below 1% everywhere: unchanged
    assert len(trim_silence(quiet)) == 800


@needs_tools
def test_trim_silence_agrees_with_sox(tmp_path):
    raw = tmp_path / "raw.wav"
    subprocess.run(["espeak-ng", "-v", "en-us+f2", "-w", str(raw), "four two seven"], check=True)
    plain, cut = tmp_path / "plain.wav", tmp_path / "cut.wav"
    subprocess.run(["sox", str(raw), "-r", "16000", "-b", "16", "-c", "1", str(plain)], check=True)
    subprocess.run(["sox", str(plain), str(cut), "silence", "1", "0.01", "1%", "reverse",
                    "silence", "1", "0.01", "1%", "reverse"], check=True)  # fmt: skip
    ours, theirs = trim_silence(read_wav(plain)), read_wav(cut)
    assert len(read_wav(plain)) - len(theirs) > 1600  # there was silence to trim
    assert abs(len(ours) - len(theirs)) <= 160  # within 10 ms of sox


# --------------------------------------------------------------------------------------------
# The split and the data builder
# --------------------------------------------------------------------------------------------


def test_voice_split_holds_out_speakers_under_every_accent():
    names = voices()
    assert len(names) == len(set(names)) == 8 * 12
    split = {v: voice_split(v) for v in names}
    assert {v for v, s in split.items() if s == "test"} == {
        v for v in names if v.rpartition("+")[2] in TEST_VARIANTS
    }
    train_variants = {v.rpartition("+")[2] for v, s in split.items() if s == "train"}
    assert not train_variants & (set(TEST_VARIANTS) | set(VAL_VARIANTS))
    assert len(train_variants) == len(VARIANTS) - 4
    assert sum(s == "test" for s in split.values()) == 16


@needs_tools
def test_builder_synthesizes_16k_mono_clips_and_caches_them(tmp_path, monkeypatch):
    names = voices(["en-gb", "en-us"], ["m1", "m7"])
    ds = build_keywords(tmp_path, voice_names=names, words=["yes", "stop"], renditions=1,
                        noise_db=(20, 30), workers=2, progress=False)  # fmt: skip
    assert len(ds.clips) == 4 * 2
    for clip in ds.clips:
        with wave.open(str(ds.path(clip))) as w:
            assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (16000, 1, 2)
            assert 0.15 < w.getnframes() / 16000 < 2.0  # a word, silence trimmed
        assert clip.split == ("test" if clip.voice.endswith("+m7") else "train")
        assert 20 <= clip.snr_db <= 30
        assert clip.text in ("yes", "stop")
    manifest = json.loads((ds.folder / "manifest.json").read_text())
    assert len(manifest["clips"]) == 8 and manifest["spec"]["renditions"] == 1
    assert (ds.folder / "manifest.csv").read_text().startswith("file,text,voice")
    assert not list(ds.folder.glob("*.raw.wav")) and not list(ds.folder.glob(".tmp-*"))
    # a second call reads the cache: nothing is synthesized again
    import lstm.data.audio as audio

    monkeypatch.setattr(audio, "_synthesize", lambda *a: pytest.fail("synthesized again"))
    again = build_keywords(tmp_path, voice_names=names, words=["yes", "stop"], renditions=1,
                           noise_db=(20, 30), workers=2, progress=False)  # fmt: skip
    assert [c.file for c in again.clips] == [c.file for c in ds.clips]


@needs_tools
def test_digit_strings_are_spoken_as_words(tmp_path):
    ds = build_digits(tmp_path, voice_names=["en-us+f1"], per_voice=3, min_digits=3,
                      max_digits=4, workers=1, progress=False)  # fmt: skip
    for clip in ds.clips:
        words = clip.text.split()
        assert 3 <= len(words) <= 4
        assert all(
            w in ("zero one two three four five six seven eight nine".split()) for w in words
        )
        assert len(read_wav(ds.path(clip))) / 16000 > 0.6  # three words take longer than one
    with pytest.raises(ValueError, match="min_digits"):
        build_digits(tmp_path, min_digits=5, max_digits=3)


# --------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------


def test_stack_frames():
    x = torch.arange(2 * 5 * 2, dtype=torch.float32).reshape(2, 5, 2)
    y, lengths = stack_frames(x, torch.tensor([5, 3]), 2)
    assert y.shape == (2, 3, 4)
    assert y[0, 0].tolist() == [0, 1, 2, 3]
    assert y[0, 2].tolist() == [8, 9, 0, 0]  # zero-padded
    assert lengths.tolist() == [3, 2]


@pytest.mark.parametrize("task", ["keywords", "digits"])
def test_padding_does_not_change_a_clip_s_output(task):
    torch.manual_seed(0)
    # the reference backend in float64: this checks packing, pooling and stacking, not a kernel
    config = SpeechConfig(task=task, num_features=8, num_classes=5, hidden_size=6, stack=2,
                          dropout=0.0, backend="bptt")  # fmt: skip
    model = build_speech_model(config).double().eval()
    short, long = torch.randn(7, 8, dtype=torch.float64), torch.randn(12, 8, dtype=torch.float64)
    batch = torch.nn.utils.rnn.pad_sequence([short, long], batch_first=True)
    both = model(batch, torch.tensor([7, 12]))
    alone = model(short[None], torch.tensor([7]))
    if task == "keywords":
        assert (both[0] - alone[0]).abs().max().item() < 1e-12
    else:
        steps = int(alone[1][0])
        assert steps == 4
        assert (both[0][:steps, 0] - alone[0][:, 0]).abs().max().item() < 1e-12


# --------------------------------------------------------------------------------------------
# A short training run, then the CLI on its checkpoint
# --------------------------------------------------------------------------------------------

TINY = ["--data-dir", "DATA", "--accents", "en-gb", "en-us", "--variants", "m1", "m2", "f1", "f2",
        "m6", "m7", "f5", "--words", "yes", "no", "up", "down", "--renditions", "2"]  # fmt: skip


@pytest.fixture(scope="module")
def keyword_run(tmp_path_factory):
    if missing_tools():
        pytest.skip(f"speech synthesis needs {', '.join(missing_tools())}")
    root = tmp_path_factory.mktemp("speech")
    args = [a.replace("DATA", str(root / "data")) for a in TINY]
    torch.manual_seed(0)
    status = main(["train", "speech", "--task", "keywords", *args, "--hidden", "32",
                   "--layers", "1", "--steps", "30", "--lr", "3e-3", "--threads", "1", "--eval-every", "10",
                   "--no-progress", "--out", str(root / "run")])  # fmt: skip
    assert status == 0
    return root


def test_keyword_training_beats_chance_on_held_out_voices(keyword_run):
    # 4 words, chance 25%; the 32 test clips are spoken by m7 and f5, never heard in training
    results = json.loads((keyword_run / "run" / "results.json").read_text())
    assert results["clips"] == {"train": 64, "val": 16, "test": 32}
    assert results["test"]["accuracy"] >= 0.75, results["test"]
    assert (keyword_run / "run" / "confusion.png").stat().st_size > 1000
    assert np.sum(results["test"]["confusion"]) == 32


def test_transcribe_and_evaluate_cli(keyword_run, tmp_path, capsys, monkeypatch):
    ds_folder = next((keyword_run / "data").glob("keywords-*"))
    manifest = json.loads((ds_folder / "manifest.json").read_text())
    test_clips = [c for c in manifest["clips"] if c["split"] == "test"][:4]
    files = [str(ds_folder / c["file"]) for c in test_clips]
    assert main(["transcribe", str(keyword_run / "run"), *files]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 4
    heard = [line.split("\t")[1] for line in lines]
    assert sum(h == c["text"] for h, c in zip(heard, test_clips)) >= 3
    # a user's own recording with silence around it: trimmed as the training clips were
    padded = tmp_path / "padded.wav"
    x = read_wav(files[0])
    write_wav(padded, np.concatenate([np.zeros(8000), x, np.zeros(8000)]))
    assert main(["transcribe", str(keyword_run / "run"), str(padded)]) == 0
    assert capsys.readouterr().out.split("\t")[1] == heard[0]
    # a user's own WAV: clear one-line errors
    for bad, message in [
        (_wav(tmp_path / "r8k.wav", rate=8000), "8000 Hz"),
        (_wav(tmp_path / "st.wav", channels=2), "2 channels"),
        (_wav(tmp_path / "e.wav", frames=0), "is empty"),
    ]:
        assert main(["transcribe", str(keyword_run / "run"), str(bad)]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err and str(bad) in err
    # evaluate finds the run's data (rebuilt from its spec) in the cache, and computes the
    # features of the split it scores only (32 test clips of the 112)
    import lstm.tasks.speech as speech

    monkeypatch.setenv("LSTM_SPEECH_CACHE", str(keyword_run / "data"))
    read, extract = [], speech.extract
    monkeypatch.setattr(speech, "extract", lambda *a, **k: read.append(1) or extract(*a, **k))
    assert main(["evaluate", str(keyword_run / "run")]) == 0
    out = capsys.readouterr().out
    assert "test voices, 32 clips" in out and "accuracy" in out
    assert len(read) == 32


def test_transcribe_rejects_a_non_speech_checkpoint(tmp_path, capsys):
    from lstm import checkpoint as ckpt

    weights = {ckpt.MODEL: ({"w": torch.zeros(1)}, None)}
    ckpt.write_checkpoint(tmp_path / "checkpoints", "final", tensors=weights,
                          jsons={ckpt.CONFIG: {"task": "lm"}}, best=True)  # fmt: skip
    assert main(["transcribe", str(tmp_path), str(_wav(tmp_path / "a.wav"))]) == 2
    assert "is not a speech model" in capsys.readouterr().err


@pytest.mark.parametrize(
    "args, message",
    [
        (["--variants", "m6", "m7"], "no training voices"),
        (["--accents", "en-xx"], "'en-xx' is not one of"),
        (["--variants", "m9"], "'m9' is not one of"),
        (["--beam", "-1"], "--beam: should be >= 0"),
        (["--resume"], "--resume: speech runs cannot be resumed yet"),
        (["--task", "words"], "invalid choice"),
    ],
)
def test_train_speech_usage_errors_are_one_line(args, message, capsys):
    assert main(["train", "speech", "--steps", "1", "--no-progress", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
