"""Speech features in numpy (and scipy's DCT): MFCCs, log-mel filterbank energies and their deltas.

The pipeline is the classic one (Davis & Mermelstein, 1980), step for step that of the
``python_speech_features`` package, whose defaults are the defaults here (and the tests compare with it):

1. pre-emphasis ``y[n] = x[n] - 0.97 x[n-1]`` (``y[0] = x[0]``);
2. frames of 25 ms every 10 ms (lengths rounded half up to samples), the last one zero-padded, each
   multiplied by a window (none by default: rectangular);
3. power spectrum ``|rfft(frame, n_fft)|^2 / n_fft`` with ``n_fft = 512``;
4. 26 triangular filters evenly spaced on the mel scale ``2595 log10(1 + f / 700)`` from 0 Hz to half the
   sample rate (edges at FFT bins ``floor((n_fft + 1) f / sample_rate)``); the log of their energies;
5. the orthonormal DCT-II of those, the first 13 coefficients kept; a sinusoidal lifter
   ``1 + (L / 2) sin(pi n / L)`` with ``L = 22``; coefficient 0 replaced by the log of the frame's total
   energy;
6. optionally the deltas (regression over +-2 frames, edges repeated) and delta-deltas appended.

Zero energies are replaced by the smallest float64 step (``numpy.finfo(float).eps``) before the log, as
``python_speech_features`` does, so silence gives finite features.
"""
from __future__ import annotations

import decimal
import math
from typing import Any, Callable, Dict, Optional, Union

import numpy as np

from rnnfast._validation import check_bool, check_int, check_real
from rnnfast.nn.module import as_real_array

__all__ = ["mfcc", "log_mel_energies", "mel_filterbank", "delta", "hz_to_mel", "mel_to_hz"]

_WINDOWS: Dict[str, Callable[[int], np.ndarray]] = {"rectangular": np.ones, "hamming": np.hamming,
                                                    "hann": np.hanning}
_EPS = np.finfo(float).eps


def hz_to_mel(hz: Any) -> Any:
    """Frequency in Hz to mels (``2595 log10(1 + hz / 700)``)."""
    return 2595 * np.log10(1 + np.asarray(hz) / 700.0)


def mel_to_hz(mel: Any) -> Any:
    """Mels to Hz, the inverse of :func:`hz_to_mel`."""
    return 700 * (10 ** (np.asarray(mel) / 2595.0) - 1)


def _round_half_up(x: float) -> int:
    return int(decimal.Decimal(x).quantize(decimal.Decimal("1"), rounding=decimal.ROUND_HALF_UP))


def _check_signal(signal: Any) -> np.ndarray:
    x = as_real_array(signal, "signal (float or integer PCM samples)")
    if x.ndim != 1:
        raise ValueError(f"signal must be 1-D (one channel; mix or pick a channel first), got shape {x.shape}")
    if x.size == 0:
        raise ValueError("signal is empty")
    x = x.astype(np.float64)
    if not np.all(np.isfinite(x)):
        raise ValueError("signal holds NaN or infinite samples")
    return x


def mel_filterbank(n_filters: int = 26, n_fft: int = 512, sample_rate: float = 16000, low_freq: float = 0.0,
                   high_freq: Optional[float] = None) -> np.ndarray:
    """Triangular filters evenly spaced on the mel scale, one per row, over the ``n_fft // 2 + 1`` FFT bins.

    Parameters
    ----------
    n_filters : int >= 1, default 26
    n_fft : int >= 2, default 512
    sample_rate : float > 0, default 16000
    low_freq : float >= 0, default 0
        Lowest band edge in Hz.
    high_freq : float, optional
        Highest band edge in Hz, at most ``sample_rate / 2`` (the default).

    Returns
    -------
    numpy.ndarray (n_filters, n_fft // 2 + 1)
    """
    n_filters = check_int(n_filters, "n_filters", 1)
    n_fft = check_int(n_fft, "n_fft", 2)
    sample_rate = check_real(sample_rate, "sample_rate", 0.0, math.inf, closed="neither")
    nyquist = sample_rate / 2
    high_freq = check_real(high_freq, "high_freq", 0.0, nyquist, closed="right", allow_none=True) or nyquist
    low_freq = check_real(low_freq, "low_freq", 0.0, high_freq, closed="left")
    mels = np.linspace(hz_to_mel(low_freq), hz_to_mel(high_freq), n_filters + 2)
    edges = np.floor((n_fft + 1) * mel_to_hz(mels) / sample_rate)
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    i = np.arange(n_fft // 2 + 1)[None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        rise = np.where((i >= lo) & (i < mid), (i - lo) / (mid - lo), 0.0)
        fall = np.where((i >= mid) & (i < hi), (hi - i) / (hi - mid), 0.0)
    return rise + fall


def _frames(x: np.ndarray, frame_len: int, frame_step: int, window: Union[str, Callable]) -> np.ndarray:
    """Overlapping frames (n_frames, frame_len) of ``x``, the last zero-padded, times the window."""
    n_frames = 1 if x.size <= frame_len else 1 + math.ceil((x.size - frame_len) / frame_step)
    padded = np.concatenate([x, np.zeros((n_frames - 1) * frame_step + frame_len - x.size)])
    frames = np.lib.stride_tricks.sliding_window_view(padded, frame_len)[::frame_step][:n_frames]
    win = _WINDOWS[window](frame_len) if isinstance(window, str) else np.asarray(window(frame_len), np.float64)
    if win.shape != (frame_len,):
        raise ValueError(f"the window function must return {frame_len} values, got shape {win.shape}")
    return frames * win


def _power_spectrum(signal: Any, sample_rate: Any, frame_length: float, frame_step: float, n_fft: Optional[int],
                    preemphasis: float, window: Union[str, Callable]):
    """Validated inputs -> (power spectrum (n_frames, n_fft // 2 + 1), n_fft, sample_rate)."""
    x = _check_signal(signal)
    sample_rate = check_real(sample_rate, "sample_rate", 0.0, math.inf, closed="neither")
    frame_length = check_real(frame_length, "frame_length (seconds)", 0.0, math.inf, closed="neither")
    frame_step = check_real(frame_step, "frame_step (seconds)", 0.0, math.inf, closed="neither")
    preemphasis = check_real(preemphasis, "preemphasis", 0.0, 1.0, closed="left")
    if isinstance(window, str) and window not in _WINDOWS:
        raise ValueError(f"window must be one of {sorted(_WINDOWS)} or a function of the frame length, "
                         f"got {window!r}")
    if not isinstance(window, str) and not callable(window):
        raise TypeError(f"window must be a name or a function, got {type(window).__name__}")
    frame_len, step = _round_half_up(frame_length * sample_rate), _round_half_up(frame_step * sample_rate)
    if frame_len < 1 or step < 1:
        raise ValueError(f"frame_length and frame_step must each span at least one sample at {sample_rate:g} Hz")
    if n_fft is None:
        n_fft = max(512, 1 << (frame_len - 1).bit_length())
    n_fft = check_int(n_fft, "n_fft", 2)
    if n_fft < frame_len:
        raise ValueError(f"n_fft={n_fft} is shorter than a frame ({frame_len} samples); use n_fft >= {frame_len}")
    emphasized = np.append(x[0], x[1:] - preemphasis * x[:-1])
    frames = _frames(emphasized, frame_len, step, window)
    return np.square(np.abs(np.fft.rfft(frames, n_fft))) / n_fft, n_fft, sample_rate


def log_mel_energies(signal: Any, sample_rate: float, n_filters: int = 26, *, frame_length: float = 0.025,
                     frame_step: float = 0.01, n_fft: Optional[int] = None, low_freq: float = 0.0,
                     high_freq: Optional[float] = None, preemphasis: float = 0.97,
                     window: Union[str, Callable] = "rectangular") -> np.ndarray:
    """Log mel-filterbank energies of each frame (``python_speech_features.logfbank``).

    Parameters
    ----------
    signal, sample_rate, frame_length, frame_step, n_fft, low_freq, high_freq, preemphasis, window
        As :func:`mfcc`.
    n_filters : int >= 1, default 26

    Returns
    -------
    numpy.ndarray (n_frames, n_filters), float64
    """
    power, n_fft, sample_rate = _power_spectrum(signal, sample_rate, frame_length, frame_step, n_fft,
                                                preemphasis, window)
    energies, _ = _filter_energies(power, n_filters, n_fft, sample_rate, low_freq, high_freq)
    return np.log(energies)


def _filter_energies(power, n_filters, n_fft, sample_rate, low_freq, high_freq):
    fb = mel_filterbank(n_filters, n_fft, sample_rate, low_freq, high_freq)
    energies = power @ fb.T
    total = power.sum(axis=1)
    return np.where(energies == 0, _EPS, energies), np.where(total == 0, _EPS, total)


def mfcc(signal: Any, sample_rate: float, n_mfcc: int = 13, *, frame_length: float = 0.025,
         frame_step: float = 0.01, n_filters: int = 26, n_fft: Optional[int] = None, low_freq: float = 0.0,
         high_freq: Optional[float] = None, preemphasis: float = 0.97, lifter: float = 22,
         append_energy: bool = True, window: Union[str, Callable] = "rectangular", deltas: int = 0,
         delta_n: int = 2) -> np.ndarray:
    """Mel-frequency cepstral coefficients of each frame of a signal (see the module docstring).

    The defaults are ``python_speech_features.mfcc``'s, and with the same parameters the result equals
    it: ``n_mfcc`` is its ``numcep``, ``n_filters`` its ``nfilt``, ``frame_length`` / ``frame_step`` its
    ``winlen`` / ``winstep``, ``lifter`` its ``ceplifter``, ``append_energy`` its ``appendEnergy``, and
    ``window="hamming"`` its ``winfunc=numpy.hamming``.

    Parameters
    ----------
    signal : 1-D array of samples
        Float samples, or integer PCM (used as is: the scale only shifts the log energies).
    sample_rate : float > 0
        Samples per second.
    n_mfcc : int in [1, n_filters], default 13
    frame_length, frame_step : float > 0, default 0.025 and 0.01
        In seconds.
    n_filters : int >= 1, default 26
    n_fft : int, optional
        FFT size: default 512, or the next power of two when a frame is longer (at least a frame).
    low_freq, high_freq : float, default 0 and ``sample_rate / 2``
        Band edges of the filterbank in Hz.
    preemphasis : float in [0, 1), default 0.97
        0 turns it off.
    lifter : float >= 0, default 22
        0 turns liftering off.
    append_energy : bool, default True
        Coefficient 0 becomes the log of the frame's total energy.
    window : {"rectangular", "hamming", "hann"} or callable, default "rectangular"
        A callable takes the frame length and returns the window.
    deltas : {0, 1, 2}, default 0
        Append the deltas (1), or the deltas and delta-deltas (2), of the coefficients.
    delta_n : int >= 1, default 2
        Frames on each side for :func:`delta`.

    Returns
    -------
    numpy.ndarray (n_frames, n_mfcc * (1 + deltas)), float64
        ``n_frames = 1 + ceil((len(signal) - frame) / step)`` (1 for a signal shorter than a frame).
    """
    n_filters = check_int(n_filters, "n_filters", 1)
    n_mfcc = check_int(n_mfcc, "n_mfcc", 1, n_filters)
    lifter = check_real(lifter, "lifter", 0.0)
    append_energy = check_bool(append_energy, "append_energy")
    deltas = check_int(deltas, "deltas", 0, 2)
    delta_n = check_int(delta_n, "delta_n", 1)
    power, n_fft, sample_rate = _power_spectrum(signal, sample_rate, frame_length, frame_step, n_fft,
                                                preemphasis, window)
    energies, total = _filter_energies(power, n_filters, n_fft, sample_rate, low_freq, high_freq)
    from scipy.fft import dct  # scipy is a run-time dependency, imported when used
    feat = dct(np.log(energies), type=2, axis=1, norm="ortho")[:, :n_mfcc]
    if lifter > 0:
        feat = feat * (1 + (lifter / 2.0) * np.sin(np.pi * np.arange(n_mfcc) / lifter))
    if append_energy:
        feat[:, 0] = np.log(total)
    parts = [feat]
    for _ in range(deltas):
        parts.append(delta(parts[-1], delta_n))
    return np.concatenate(parts, axis=1) if deltas else feat


def delta(features: Any, N: int = 2) -> np.ndarray:
    """Delta (regression) coefficients over time: ``d_t = sum_n n (c_{t+n} - c_{t-n}) / (2 sum_n n^2)``,
    n = 1..N, with the first and last frames repeated at the edges (``python_speech_features.delta``).

    Parameters
    ----------
    features : array (n_frames, n_features)
    N : int >= 1, default 2

    Returns
    -------
    numpy.ndarray (n_frames, n_features), float64
    """
    N = check_int(N, "N", 1)
    f = as_real_array(features, "features")
    if f.ndim != 2 or f.shape[0] == 0:
        raise ValueError(f"features must be 2-D (frames, features) with at least one frame, got shape {f.shape}")
    padded = np.pad(f.astype(np.float64), ((N, N), (0, 0)), mode="edge")
    T = f.shape[0]
    out = np.zeros((T, f.shape[1]))
    for n in range(1, N + 1):
        out += n * (padded[N + n:N + n + T] - padded[N - n:N - n + T])
    return out / (2 * sum(n * n for n in range(1, N + 1)))
