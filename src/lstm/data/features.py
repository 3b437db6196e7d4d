"""Speech features computed with torch: log-mel spectrograms and MFCCs.

From samples :math:`x[n]` at sample rate :math:`r` (16 kHz):

1. Frames of ``n_fft`` samples (512) every ``hop_length`` samples (10 ms, 160), each multiplied
   by a periodic Hann window of ``win_length`` samples (25 ms, 400),
   :math:`w[n] = \\tfrac12 (1 - \\cos(2\\pi n / W))`, centred in the frame and zero outside
   (``torch.stft(center=False)``): :math:`T = 1 + \\lfloor (N - n_{fft}) / H \\rfloor` frames.
   Frame :math:`t`, bin :math:`k` (:math:`w` padded to :math:`N`):
   :math:`X_t[k] = \\sum_n w[n]\\, x[tH + n]\\, e^{-2\\pi i k n / N}`, at frequency
   :math:`f_k = k r / N` (31.25 Hz apart).
2. Power spectrum :math:`P_t[k] = |X_t[k]|^2`.
3. Mel scale (HTK): :math:`m(f) = 2595 \\log_{10}(1 + f / 700)`, :math:`f(m) = 700 (10^{m/2595} - 1)`.
   ``n_mels + 2`` points equally spaced in mel from :math:`m(f_{min})` to :math:`m(f_{max})`,
   converted back to Hz: :math:`c_0 < c_1 < \\dots < c_{M+1}`. Filter :math:`j = 1 \\dots M` is the
   triangle rising from :math:`c_{j-1}` to 1 at :math:`c_j` and falling to 0 at :math:`c_{j+1}`:
   :math:`W_j(f) = \\max(0, \\min(\\frac{f - c_{j-1}}{c_j - c_{j-1}}, \\frac{c_{j+1} - f}{c_{j+1} - c_j}))`
   (:func:`mel_filterbank`, a ``(M, N/2+1)`` matrix of :math:`W_j(f_k)`).
4. Log-mel: :math:`L_t[j] = \\ln(\\sum_k W_j(f_k) P_t[k] + \\epsilon)`, :math:`\\epsilon = 10^{-6}`.
5. MFCC (optional): the orthonormal DCT-II of each log-mel frame, first ``n_mfcc`` coefficients,
   :math:`C_t[q] = s_q \\sum_{j=0}^{M-1} L_t[j] \\cos(\\pi q (j + \\tfrac12) / M)`,
   :math:`s_0 = \\sqrt{1/M}`, :math:`s_q = \\sqrt{2/M}` (:func:`dct_matrix`).
6. Normalization (:func:`normalize`): per utterance, each channel minus its mean over the
   utterance's frames, divided by its standard deviation (cepstral mean and variance
   normalization); or global, with a mean and standard deviation per channel measured on the
   training set.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from lstm.checkpoint import JsonConfig

__all__ = [
    "FeatureConfig",
    "dct_matrix",
    "extract",
    "hz_to_mel",
    "log_mel",
    "mel_filterbank",
    "mel_to_hz",
    "normalize",
]


def hz_to_mel(f: float | Tensor) -> float | Tensor:
    """HTK's mel scale: ``2595 log10(1 + f / 700)``."""
    if torch.is_tensor(f):
        return 2595.0 * torch.log10(1.0 + f / 700.0)
    return 2595.0 * math.log10(1.0 + f / 700.0)


def mel_to_hz(m: float | Tensor) -> float | Tensor:
    """The inverse of :func:`hz_to_mel`: ``700 (10^(m / 2595) - 1)``."""
    if torch.is_tensor(m):
        return 700.0 * (torch.pow(10.0, m / 2595.0) - 1.0)
    return 700.0 * (10.0 ** (m / 2595.0) - 1.0)


def mel_filterbank(
    n_mels: int,
    n_fft: int,
    sample_rate: int,
    f_min: float = 0.0,
    f_max: float | None = None,
    dtype: torch.dtype = torch.float64,
) -> Tensor:
    """Triangular mel filters ``(n_mels, n_fft // 2 + 1)``: row ``j`` holds ``W_{j+1}(f_k)`` of the
    module docstring (peak 1 at the filter's centre frequency, not area-normalized)."""
    f_max = sample_rate / 2 if f_max is None else f_max
    if n_mels < 1 or n_fft < 2:
        raise ValueError(f"need n_mels >= 1 and n_fft >= 2, got {n_mels}, {n_fft}")
    if not 0 <= f_min < f_max <= sample_rate / 2:
        raise ValueError(
            f"need 0 <= f_min < f_max <= sample_rate / 2, got f_min={f_min}, f_max={f_max}, "
            f"sample_rate={sample_rate}"
        )
    bins = torch.arange(n_fft // 2 + 1, dtype=torch.float64) * sample_rate / n_fft  # f_k, Hz
    mels = torch.linspace(hz_to_mel(f_min), hz_to_mel(f_max), n_mels + 2, dtype=torch.float64)
    c = mel_to_hz(mels)  # (M + 2,) centre frequencies c_0 .. c_{M+1}
    left, centre, right = c[:-2, None], c[1:-1, None], c[2:, None]  # (M, 1) each
    rising = (bins - left) / (centre - left)
    falling = (right - bins) / (right - centre)
    return torch.clamp(torch.minimum(rising, falling), min=0.0).to(dtype)  # (M, K)


def dct_matrix(n_mfcc: int, n_mels: int, dtype: torch.dtype = torch.float64) -> Tensor:
    """The orthonormal DCT-II ``(n_mfcc, n_mels)``: ``C = L @ D.T`` maps log-mel frames to MFCCs."""
    if not 1 <= n_mfcc <= n_mels:
        raise ValueError(f"need 1 <= n_mfcc <= n_mels, got n_mfcc={n_mfcc}, n_mels={n_mels}")
    q = torch.arange(n_mfcc, dtype=torch.float64)[:, None]
    j = torch.arange(n_mels, dtype=torch.float64)[None, :]
    d = torch.cos(math.pi * q * (j + 0.5) / n_mels) * math.sqrt(2.0 / n_mels)
    d[0] /= math.sqrt(2.0)
    return d.to(dtype)


@dataclass
class FeatureConfig(JsonConfig):
    """How clips become feature frames (stored in checkpoints as JSON)."""

    kind: str = "logmel"  # logmel | mfcc
    sample_rate: int = 16_000
    n_fft: int = 512
    win_length: int = 400  # 25 ms
    hop_length: int = 160  # 10 ms
    n_mels: int = 40
    n_mfcc: int = 13
    f_min: float = 20.0
    f_max: float = 7600.0
    norm: str = "utterance"  # utterance | global | none
    mean: list[float] | None = None  # global normalization, from the training set
    std: list[float] | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("logmel", "mfcc"):
            raise ValueError(f"kind should be 'logmel' or 'mfcc', got {self.kind!r}")
        if self.norm not in ("utterance", "global", "none"):
            raise ValueError(f"norm should be 'utterance', 'global' or 'none', got {self.norm!r}")
        if self.win_length > self.n_fft:
            raise ValueError(f"win_length {self.win_length} is longer than n_fft {self.n_fft}")

    @property
    def size(self) -> int:
        """Channels per frame."""
        return self.n_mfcc if self.kind == "mfcc" else self.n_mels


_FILTERS: dict[tuple, Tensor] = {}


def log_mel(samples: Tensor | np.ndarray, config: FeatureConfig | None = None) -> Tensor:
    """Log-mel frames ``(T, n_mels)`` float32 of mono ``samples (N,)`` (steps 1-4 of the module
    docstring); a clip shorter than one frame (``n_fft`` samples) is zero-padded to one frame."""
    c = config or FeatureConfig()
    x = torch.as_tensor(samples, dtype=torch.float32).reshape(-1)  # (N,)
    if x.numel() < c.n_fft:
        x = torch.nn.functional.pad(x, (0, c.n_fft - x.numel()))
    window = torch.hann_window(c.win_length, periodic=True)
    spec = torch.stft(
        x, c.n_fft, c.hop_length, c.win_length, window, center=False, return_complex=True
    )  # (K, T), fmt: skip
    power = spec.real.square() + spec.imag.square()  # (K, T)
    key = (c.n_mels, c.n_fft, c.sample_rate, c.f_min, c.f_max)
    if key not in _FILTERS:
        _FILTERS[key] = mel_filterbank(*key, dtype=torch.float32)
    return torch.log(_FILTERS[key] @ power + 1e-6).T.contiguous()  # (T, M)


def normalize(features: Tensor, config: FeatureConfig) -> Tensor:
    """Step 6 of the module docstring on ``features (T, C)``."""
    if config.norm == "utterance":
        mean = features.mean(0, keepdim=True)
        std = features.std(0, keepdim=True, unbiased=False) if len(features) > 1 else 1.0
        return (features - mean) / (std + 1e-5)
    if config.norm == "global":
        if config.mean is None or config.std is None:
            raise ValueError("global normalization needs the training set's mean and std")
        mean = torch.tensor(config.mean, dtype=features.dtype)
        std = torch.tensor(config.std, dtype=features.dtype)
        return (features - mean) / (std + 1e-5)
    return features


def extract(samples: Tensor | np.ndarray, config: FeatureConfig, norm: bool = True) -> Tensor:
    """The model's input frames ``(T, config.size)``: log-mel or MFCC, normalized (``norm``)."""
    features = log_mel(samples, config)
    if config.kind == "mfcc":
        features = features @ dct_matrix(config.n_mfcc, config.n_mels, features.dtype).T
    return normalize(features, config) if norm else features
