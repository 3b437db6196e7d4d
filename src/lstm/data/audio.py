"""Speech data: clips synthesized with espeak-ng, a WAV reader, and the fixed split by voice.

No package ships recorded human speech that installs offline, so the audio here is synthesized:
espeak-ng speaks each word or digit string with one of many *voices*, and sox resamples it to
16 kHz mono 16-bit and trims the silence at both ends (the recipe)::

    espeak-ng -v en-gb+f2 -s 130 -p 35 -w out.wav "seven"
    sox out.wav -r 16000 -b 16 -c 1 clip.wav silence 1 0.01 1% reverse silence 1 0.01 1% reverse

A **voice** is an accent (espeak-ng's language/dialect rules: ``en-gb``, ``en-us``,
``en-gb-scotland`` ...) with a speaker *variant* (``+m1`` ... ``+m7``, ``+f1`` ... ``+f5``: pitch
base and range, formants, breathiness). Every clip also draws its own speed (words per minute) and
pitch, and optionally white noise at a random signal-to-noise ratio.

The split is by voice and fixed (:func:`voice_split`): the variants in :data:`TEST_VARIANTS` are
the test voices and those in :data:`VAL_VARIANTS` the validation voices, under every accent; the
other variants train. So no test speaker is ever heard in training, under any accent.

Two data sets (:func:`build_keywords`, :func:`build_digits`): single words (the ten digits and
eight commands, the keyword-spotting task) and strings of 3 to 7 digits spoken as words ("three
seven one nine", the CTC task). Clips are built in parallel subprocesses and cached on disk
(:func:`default_cache_dir`, ``$LSTM_SPEECH_CACHE`` or ``~/.cache/lstm/speech``) under a folder
named by a hash of what was asked for, with a ``manifest.json`` (and ``manifest.csv``) naming
every clip's file, words, voice, speed, pitch, noise and split.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import shutil
import subprocess
import wave
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "ACCENTS",
    "COMMANDS",
    "DIGIT_WORDS",
    "KEYWORDS",
    "SAMPLE_RATE",
    "TEST_VARIANTS",
    "VAL_VARIANTS",
    "VARIANTS",
    "AudioFileError",
    "Clip",
    "SpeechDataset",
    "build_digits",
    "build_keywords",
    "default_cache_dir",
    "missing_tools",
    "read_wav",
    "trim_silence",
    "voice_split",
    "voices",
    "write_wav",
]

SAMPLE_RATE = 16_000
DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
COMMANDS = ("yes", "no", "up", "down", "left", "right", "stop", "go")
KEYWORDS = DIGIT_WORDS + COMMANDS
ACCENTS = (
    "en-gb",
    "en-us",
    "en-gb-scotland",
    "en-gb-x-gbclan",  # Lancaster
    "en-gb-x-gbcwmd",  # West Midlands
    "en-gb-x-rp",  # Received Pronunciation
    "en-029",  # Caribbean
    "en-us-nyc",  # New York City
)
VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5")
VAL_VARIANTS = ("m6", "f4")
TEST_VARIANTS = ("m7", "f5")
SPEED_RANGE = (125, 195)  # words per minute (espeak-ng's default is 175)
PITCH_RANGE = (25, 75)  # 0-99 (default 50)


class AudioFileError(ValueError):
    """A WAV file that cannot be used: names the file and what is wrong with it."""


def missing_tools() -> list[str]:
    """The programs of the synthesis (``espeak-ng``, ``sox``) not found on ``PATH``."""
    return [t for t in ("espeak-ng", "sox") if shutil.which(t) is None]


def voices(accents: Sequence[str] = ACCENTS, variants: Sequence[str] = VARIANTS) -> list[str]:
    """Every voice name ``accent+variant`` (espeak-ng's ``-v`` argument)."""
    return [f"{a}+{v}" for a in accents for v in variants]


def voice_split(voice: str) -> str:
    """``"train"``, ``"val"`` or ``"test"`` for a voice ``accent+variant``: decided by the variant
    alone (:data:`TEST_VARIANTS`, :data:`VAL_VARIANTS`), so a held-out speaker is held out under
    every accent."""
    variant = voice.rpartition("+")[2]
    if variant in TEST_VARIANTS:
        return "test"
    if variant in VAL_VARIANTS:
        return "val"
    return "train"


# --------------------------------------------------------------------------------------------
# WAV files
# --------------------------------------------------------------------------------------------


def read_wav(path: str | os.PathLike, sample_rate: int | None = SAMPLE_RATE) -> np.ndarray:
    """The samples of a mono 16-bit PCM WAV file as float32 in ``[-1, 1)``, shape ``(N,)``.

    Raises :class:`AudioFileError` (a ``ValueError``) naming the file and the bad value when the
    file is missing, not a WAV (or corrupt), not 16-bit PCM, stereo, at another rate than
    ``sample_rate`` (``None``: any rate), or holds no samples.
    """
    name = str(path)
    if not os.path.isfile(path):
        raise AudioFileError(f"audio file {name!r} does not exist")
    try:
        with wave.open(name, "rb") as w:
            channels, width, rate = w.getnchannels(), w.getsampwidth(), w.getframerate()
            frames = w.getnframes()
            raw = w.readframes(frames)
    except (wave.Error, EOFError) as e:
        why = str(e) or "too short for a WAV header"
        raise AudioFileError(f"audio file {name!r} is not a readable WAV file ({why})") from None
    if channels != 1:
        raise AudioFileError(
            f"audio file {name!r} has {channels} channels; a mono file is needed "
            f"(e.g. `sox in.wav -c 1 out.wav`)"
        )
    if width != 2:
        raise AudioFileError(
            f"audio file {name!r} has {8 * width}-bit samples; 16-bit PCM is needed "
            f"(e.g. `sox in.wav -b 16 out.wav`)"
        )
    if sample_rate is not None and rate != sample_rate:
        raise AudioFileError(
            f"audio file {name!r} has a sample rate of {rate} Hz; {sample_rate} Hz is needed "
            f"(e.g. `sox in.wav -r {sample_rate} out.wav`)"
        )
    if frames == 0 or len(raw) < 2:
        raise AudioFileError(f"audio file {name!r} is empty (0 samples)")
    if len(raw) != 2 * frames:
        raise AudioFileError(
            f"audio file {name!r} is truncated: its header says {frames} samples, it holds "
            f"{len(raw) // 2}"
        )
    return np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768.0


def write_wav(path: str | os.PathLike, samples: np.ndarray, sample_rate: int = SAMPLE_RATE) -> None:
    """Writes float samples in ``[-1, 1]`` (clipped) as a mono 16-bit PCM WAV file."""
    pcm = np.clip(np.round(np.asarray(samples, np.float64) * 32768.0), -32768, 32767)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(pcm.astype("<i2").tobytes())


def _speech_start(x: np.ndarray, threshold: float, width: int, window: int) -> int | None:
    """The first sample of the first ``width``-sample stretch whose trailing RMS (over ``window``
    samples) stays at or above ``threshold``; ``None`` if there is none."""
    energy = np.concatenate([[0.0], np.cumsum(x * x)])
    n = np.arange(1, len(x) + 1)
    rms = np.sqrt((energy[n] - energy[np.maximum(n - window, 0)]) / np.minimum(n, window))
    loud = (rms >= threshold).astype(np.int32)
    stretch = np.flatnonzero(np.convolve(loud, np.ones(width, np.int32), "valid") == width)
    return int(stretch[0]) if len(stretch) else None


def trim_silence(
    samples: np.ndarray,
    threshold: float = 0.01,
    duration: float = 0.01,
    sample_rate: int = SAMPLE_RATE,
) -> np.ndarray:
    """``samples`` without the silence at both ends, like the recipe's ``sox ... silence 1 0.01 1%
    reverse silence 1 0.01 1% reverse`` that trims the training clips: the clip starts where the
    RMS over the last 20 ms first stays at or above ``threshold`` (1% of full scale) for
    ``duration`` seconds (10 ms), and ends where the same holds reading backwards. A clip with no
    such stretch is returned unchanged."""
    x = np.asarray(samples, dtype=np.float64)
    window, width = max(1, sample_rate // 50), max(1, round(duration * sample_rate))
    start = _speech_start(x, threshold, width, window)
    if start is None:
        return np.asarray(samples)
    end = len(x) - _speech_start(x[::-1], threshold, width, window)
    return np.asarray(samples)[start:end]


def add_noise(samples: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    """``samples`` plus white Gaussian noise at ``snr_db`` decibels below the signal's power."""
    power = float(np.mean(np.square(samples, dtype=np.float64)))
    noise = rng.standard_normal(len(samples)) * np.sqrt(power / 10 ** (snr_db / 10))
    return (samples + noise).astype(np.float32)


# --------------------------------------------------------------------------------------------
# Synthesis
# --------------------------------------------------------------------------------------------


@dataclass
class Clip:
    """One synthesized clip (a row of the manifest)."""

    file: str  # relative to the data set's folder
    text: str  # the words spoken, space-separated
    voice: str  # accent+variant
    speed: int  # words per minute
    pitch: int
    snr_db: float | None  # white noise added at this SNR, or None
    split: str  # train | val | test


def _synthesize(clip: Clip, folder: Path, seed: int) -> None:
    """espeak-ng, then sox (16 kHz, mono, 16-bit, silence trimmed at both ends), then noise."""
    target = folder / clip.file
    raw = target.with_name(target.stem + ".raw.wav")
    tmp = target.with_name(".tmp-" + target.name)
    speak = ["espeak-ng", "-v", clip.voice, "-s", str(clip.speed), "-p", str(clip.pitch), "-w",
             str(raw), clip.text]  # fmt: skip
    trim = ["sox", str(raw), "-r", str(SAMPLE_RATE), "-b", "16", "-c", "1", "-t", "wav", str(tmp),
            "silence", "1", "0.01", "1%", "reverse", "silence", "1", "0.01", "1%", "reverse"]  # fmt: skip
    for command in (speak, trim):
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command[:3])} ... failed: {done.stderr.strip()}")
    raw.unlink()
    if clip.snr_db is not None:
        samples = read_wav(tmp)
        write_wav(tmp, add_noise(samples, clip.snr_db, np.random.default_rng(seed)))
    os.replace(tmp, target)


@dataclass
class SpeechDataset:
    """A built data set: its folder, the clips, and the spec it was built from."""

    folder: Path
    clips: list[Clip]
    spec: dict

    def part(self, split: str) -> list[Clip]:
        """The clips of ``split`` (train, val or test)."""
        return [c for c in self.clips if c.split == split]

    def path(self, clip: Clip) -> Path:
        return self.folder / clip.file


def default_cache_dir() -> Path:
    """``$LSTM_SPEECH_CACHE`` or ``~/.cache/lstm/speech``."""
    env = os.environ.get("LSTM_SPEECH_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "lstm" / "speech"


def _build(spec: dict, texts_per_voice, root, workers, progress) -> SpeechDataset:
    """Draws every clip's words and settings from ``spec`` (seeded), synthesizes the missing ones
    in parallel, and writes the manifest; a folder whose manifest matches ``spec`` is reused."""
    missing = missing_tools()
    if missing:
        raise RuntimeError(
            f"speech synthesis needs {' and '.join(missing)} (Debian: apt-get install espeak-ng "
            f"sox; scripts/setup.sh installs them)"
        )
    key = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]
    folder = Path(root or default_cache_dir()) / f"{spec['kind']}-{key}"
    manifest = folder / "manifest.json"
    if manifest.is_file():
        data = json.loads(manifest.read_text(encoding="utf-8"))
        if data.get("spec") == spec:
            return SpeechDataset(folder, [Clip(**c) for c in data["clips"]], spec)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(spec["seed"])
    clips = []
    for voice in spec["voices"]:
        for text in texts_per_voice(rng):
            snr = None
            if spec["noise_db"] is not None:
                snr = round(float(rng.uniform(*spec["noise_db"])), 1)
            clips.append(Clip(f"{len(clips):06d}.wav", text, voice,
                              int(rng.integers(SPEED_RANGE[0], SPEED_RANGE[1] + 1)),
                              int(rng.integers(PITCH_RANGE[0], PITCH_RANGE[1] + 1)), snr,
                              voice_split(voice)))  # fmt: skip
    todo = [(k, c) for k, c in enumerate(clips) if not (folder / c.file).is_file()]
    bar = None
    if progress and todo:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(todo), unit="clip", desc=f"synthesizing {spec['kind']}")
    with ThreadPoolExecutor(max_workers=workers or min(8, os.cpu_count() or 1)) as pool:
        for _ in pool.map(lambda kc: _synthesize(kc[1], folder, spec["seed"] * 1_000_003 + kc[0]),
                          todo):  # fmt: skip
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    from lstm.checkpoint import atomic_write_text

    rows = [asdict(c) for c in clips]
    table = io.StringIO()
    writer = csv.DictWriter(table, fieldnames=list(rows[0]) if rows else ["file"])
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(folder / "manifest.csv", table.getvalue())
    atomic_write_text(manifest, json.dumps({"spec": spec, "clips": rows}, indent=1) + "\n")
    return SpeechDataset(folder, clips, spec)


def _check_noise(noise_db) -> list[float] | None:
    if noise_db is None:
        return None
    low, high = (float(v) for v in noise_db)
    if not low <= high:
        raise ValueError(f"noise_db should be (low, high) with low <= high, got {noise_db}")
    return [low, high]


def build_keywords(
    root: str | os.PathLike | None = None,
    *,
    voice_names: Sequence[str] | None = None,
    words: Sequence[str] = KEYWORDS,
    renditions: int = 2,
    noise_db: tuple[float, float] | None = None,
    seed: int = 0,
    workers: int | None = None,
    progress: bool = True,
) -> SpeechDataset:
    """Each word of ``words`` spoken ``renditions`` times by every voice (default: all
    :func:`voices`), each time with its own speed and pitch, and white noise at an SNR drawn from
    ``noise_db`` (dB) when given. Cached under ``root`` (:func:`default_cache_dir`)."""
    if renditions < 1:
        raise ValueError(f"renditions should be at least 1, got {renditions}")
    if not words:
        raise ValueError("words is empty")
    spec = {"kind": "keywords", "voices": list(voice_names or voices()), "words": list(words),
            "renditions": renditions, "noise_db": _check_noise(noise_db), "seed": seed,
            "format": 1}  # fmt: skip
    return _build(spec, lambda rng: [w for w in words for _ in range(renditions)], root, workers,
                  progress)  # fmt: skip


def build_digits(
    root: str | os.PathLike | None = None,
    *,
    voice_names: Sequence[str] | None = None,
    per_voice: int = 40,
    min_digits: int = 3,
    max_digits: int = 7,
    noise_db: tuple[float, float] | None = None,
    seed: int = 0,
    workers: int | None = None,
    progress: bool = True,
) -> SpeechDataset:
    """``per_voice`` random digit strings per voice, each ``min_digits`` to ``max_digits`` long
    and spoken as words ("three seven one nine"), with its own speed, pitch and (``noise_db``)
    noise. Cached under ``root``."""
    if not 1 <= min_digits <= max_digits:
        raise ValueError(f"need 1 <= min_digits <= max_digits, got {min_digits}, {max_digits}")
    if per_voice < 1:
        raise ValueError(f"per_voice should be at least 1, got {per_voice}")
    spec = {"kind": "digits", "voices": list(voice_names or voices()), "per_voice": per_voice,
            "min_digits": min_digits, "max_digits": max_digits,
            "noise_db": _check_noise(noise_db), "seed": seed, "format": 1}  # fmt: skip

    def texts(rng: np.random.Generator) -> list[str]:
        out = []
        for _ in range(per_voice):
            n = int(rng.integers(min_digits, max_digits + 1))
            out.append(" ".join(DIGIT_WORDS[d] for d in rng.integers(0, 10, n)))
        return out

    return _build(spec, texts, root, workers, progress)
