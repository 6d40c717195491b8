"""Spoken digit strings for speech recognition: synthesized with ``espeak-ng`` in many voices, and real
recordings of one speaker (Asterisk's "Allison" prompts) as an out-of-domain test.

**Synthesized** (:func:`load_spoken_digits`, Debian/Ubuntu package ``espeak-ng``, GPL-3+): strings of 1-7
digits spoken as words ("three one four") by ``espeak-ng -v ACCENT+VARIANT -s SPEED -p PITCH -g GAP -a
AMPLITUDE``, every utterance with its own seeded voice, speed (120-220 words/min), pitch (15-85), gap
between words (0-8 x 10 ms) and amplitude (60-160). A voice is an accent of :data:`ACCENTS` with a variant
of :data:`VARIANTS` (7 x 30 = 210 voices); the test split holds out whole voices: those whose CRC-32 of
``"accent+variant"`` modulo 100 is at least ``100 - TEST_PERCENT`` (40 of the 210 voices, 19%), so no test voice is heard
in training. Audio is resampled to ``sample_rate`` (8 kHz by default, telephone band, as the recordings)
and cached in a directory (``cache_dir``, else ``$RNNFAST_CACHE_DIR``, else ``$XDG_CACHE_HOME/rnnfast`` or
``~/.cache/rnnfast``), so each set is synthesized once (about 25 ms per utterance with two processes).

**Recorded** (:func:`load_recorded_digits`, Debian packages ``asterisk-core-sounds-en-wav`` and
``asterisk-core-sounds-en``, CC-BY-SA-3.0): the ten single digits "zero" .. "nine" of
``/usr/share/asterisk/sounds/en_US_f_Allison/digits/{0..9}.wav`` (one female speaker, 8 kHz), their
transcripts checked against ``/usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz`` when that
file is there; then, optionally, strings of those recordings joined with seeded pauses of 50-300 ms. The
other prompts (teens, tens, ordinals, "oh") are not digit strings in this vocabulary and are left out.

Audio files are read with ``soundfile`` when it is installed, else ``scipy.io.wavfile``, and resampled with
``scipy.signal.resample_poly``. :func:`speech_features` turns a signal into normalised MFCCs with deltas
(:func:`rnnfast.datasets.audio.mfcc`).
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import gzip
import math
import os
import shutil
import subprocess
import tempfile
from typing import List, Optional, Sequence

import numpy as np

from rnnfast._validation import Options, check_bool, check_int
from rnnfast.datasets import audio
from rnnfast.datasets._base import DatasetNotAvailable, hash_bucket

__all__ = ["SpokenDigits", "load_spoken_digits", "load_recorded_digits", "speech_features", "digit_voices",
           "digits_to_words", "cache_directory", "read_audio", "DIGIT_WORDS", "ACCENTS", "VARIANTS",
           "TEST_PERCENT", "SAMPLE_RATE"]

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
#: espeak-ng's English accents that need no mbrola voices.
ACCENTS = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-029")
#: espeak-ng voice variants (``espeak-ng-data/voices/!v``): formant voices, klatt voices, and others.
VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5", "klatt", "klatt2", "klatt3",
            "klatt4", "croak", "whisper", "adam", "Andy", "Annie", "aunty", "benjamin", "caleb", "david", "ed",
            "john", "linda", "max", "steph")
#: A voice is a test voice when the CRC-32 of "accent+variant" mod 100 >= 100 - TEST_PERCENT.
TEST_PERCENT = 15
SAMPLE_RATE = 8000
_VERSION = 1  # of the synthesis recipe: part of the cache file names
_ASTERISK = "/usr/share/asterisk/sounds/en_US_f_Allison/digits"
_TRANSCRIPTS = "/usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz"
_APT_ESPEAK = "sudo apt-get install espeak-ng"
_APT_ASTERISK = "sudo apt-get install asterisk-core-sounds-en-wav asterisk-core-sounds-en"


@dataclasses.dataclass
class SpokenDigits:
    """Utterances of digit strings.

    Attributes
    ----------
    audio : list of float32 arrays
        Mono signals in [-1, 1] at ``sample_rate``.
    digits : list of str
        What each utterance says, as digits ("314").
    voices : list of str
        Who says it ("en-gb-scotland+f3"; "allison" for the recordings).
    sample_rate : int
    """

    audio: List[np.ndarray]
    digits: List[str]
    voices: List[str]
    sample_rate: int

    def __len__(self) -> int:
        return len(self.digits)

    def words(self) -> List[str]:
        """The transcripts as words: "three one four"."""
        return [digits_to_words(d) for d in self.digits]

    def features(self, **kwargs) -> List[np.ndarray]:
        """:func:`speech_features` of every utterance (keywords passed on)."""
        return [speech_features(a, self.sample_rate, **kwargs) for a in self.audio]

    def seconds(self) -> float:
        """Total duration."""
        return float(sum(a.size for a in self.audio)) / self.sample_rate


def digits_to_words(digits: str) -> str:
    """``"314"`` -> ``"three one four"``."""
    if not isinstance(digits, str):
        raise TypeError(f"digits must be a string of digits, got {type(digits).__name__}")
    if not all(c in "0123456789" for c in digits):
        raise ValueError(f"digits must hold only 0-9, got {digits!r}")
    return " ".join(DIGIT_WORDS[int(c)] for c in digits)


def digit_voices(split: Optional[str] = None) -> List[str]:
    """The voices "accent+variant" of a split ("train", "test", or None for all), held out by name."""
    split = Options("train", "test", allow_none=True).check(split, "split")
    voices = [f"{a}+{v}" for a in ACCENTS for v in VARIANTS]
    if split is None:
        return voices
    return [v for v in voices if (hash_bucket(v) >= 100 - TEST_PERCENT) == (split == "test")]


def speech_features(signal: np.ndarray, sample_rate: float, n_mfcc: int = 13, deltas: int = 2,
                    normalize: bool = True) -> np.ndarray:
    """MFCCs (25 ms frames every 10 ms, Hamming window) with their deltas, each coefficient normalised over
    the utterance (mean 0, variance 1: removes the channel and loudness) unless ``normalize`` is False.

    Returns
    -------
    float32 array (n_frames, n_mfcc * (1 + deltas))
    """
    normalize = check_bool(normalize, "normalize")
    f = audio.mfcc(signal, sample_rate, n_mfcc, window="hamming", deltas=deltas)
    if normalize:
        f = (f - f.mean(axis=0)) / (f.std(axis=0) + 1e-5)
    return f.astype(np.float32)


# ---------------------------------------------------------------------------------------- audio files
def read_audio(path: str, sample_rate: Optional[int] = None) -> tuple:
    """A WAV file as float32 mono in [-1, 1] and its rate; resampled to ``sample_rate`` when given.

    Uses ``soundfile`` when installed, else ``scipy.io.wavfile`` (PCM WAV only).
    """
    try:
        import soundfile  # type: ignore[import-not-found]
    except ImportError:
        soundfile = None
    if soundfile is not None:
        x, rate = soundfile.read(path, dtype="float32", always_2d=True)
        x = x.mean(axis=1)
    else:
        from scipy.io import wavfile
        rate, x = wavfile.read(path)
        x = x.astype(np.float32) / (32768.0 if x.dtype == np.int16 else 2.0 ** 31 if x.dtype == np.int32 else 1.0)
        x = x.mean(axis=1) if x.ndim == 2 else x
    if sample_rate is not None and sample_rate != rate:
        x = _resample(x, rate, sample_rate)
    return x.astype(np.float32), int(sample_rate or rate)


def _resample(x: np.ndarray, rate: int, to: int) -> np.ndarray:
    from scipy.signal import resample_poly
    g = math.gcd(int(rate), int(to))
    return resample_poly(x, to // g, rate // g).astype(np.float32)


# ---------------------------------------------------------------------------------------- synthesis
def cache_directory(cache_dir: Optional[str] = None) -> str:
    """Where synthesized sets are kept: ``cache_dir``, else ``$RNNFAST_CACHE_DIR``, else
    ``$XDG_CACHE_HOME/rnnfast`` (default ``~/.cache/rnnfast``); created if missing."""
    if cache_dir is None:
        cache_dir = os.environ.get("RNNFAST_CACHE_DIR") or os.path.join(
            os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "rnnfast")
    os.makedirs(cache_dir, exist_ok=True)
    return os.fspath(cache_dir)


def _espeak() -> str:
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise DatasetNotAvailable(f"the synthesized spoken digits need the espeak-ng program, which is not on "
                                  f"PATH: install it with `{_APT_ESPEAK}` (Debian/Ubuntu; Fedora: `dnf install "
                                  f"espeak-ng`, macOS: `brew install espeak-ng`)", package="espeak-ng")
    return exe


def _recipe(split: str, i: int, seed: int, min_digits: int, max_digits: int, voices: Sequence[str]) -> dict:
    """Utterance ``i`` of a split: its digits, voice and prosody, from its own seed (so a smaller set is
    a prefix of a larger one)."""
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(split == "test", i)))
    n = int(rng.integers(min_digits, max_digits + 1))
    voice = voices[int(rng.integers(len(voices)))]
    return {"digits": "".join(str(d) for d in rng.integers(0, 10, n)), "voice": voice,
            "speed": int(rng.integers(120, 221)), "pitch": int(rng.integers(15, 86)), "gap": int(rng.integers(0, 9)),
            "amplitude": int(rng.integers(60, 161))}


def _synthesize(exe: str, r: dict, path: str, sample_rate: int) -> np.ndarray:
    cmd = [exe, "-v", r["voice"], "-s", str(r["speed"]), "-p", str(r["pitch"]), "-g", str(r["gap"]),
           "-a", str(r["amplitude"]), "-w", path, digits_to_words(r["digits"])]
    done = subprocess.run(cmd, capture_output=True, timeout=60)
    if done.returncode != 0 or not os.path.exists(path):
        raise RuntimeError(f"espeak-ng failed ({' '.join(cmd)}): {done.stderr.decode(errors='replace')[:300]}")
    return read_audio(path, sample_rate)[0]


def _synthesize_all(recipes: List[dict], sample_rate: int, workers: int = 2) -> List[np.ndarray]:
    exe = _espeak()
    with tempfile.TemporaryDirectory(prefix="rnnfast-digits-") as tmp, \
            concurrent.futures.ThreadPoolExecutor(workers) as pool:
        jobs = [pool.submit(_synthesize, exe, r, os.path.join(tmp, f"{i}.wav"), sample_rate)
                for i, r in enumerate(recipes)]
        return [j.result() for j in jobs]


def _save(path: str, signals: List[np.ndarray], recipes: List[dict]) -> None:
    pcm = np.concatenate([np.clip(np.round(s * 32767), -32768, 32767).astype(np.int16) for s in signals])
    tmp = f"{path}.{os.getpid()}.tmp.npz"
    np.savez_compressed(tmp, pcm=pcm, lengths=np.array([s.size for s in signals], np.int64),
             digits=np.array([r["digits"] for r in recipes]), voices=np.array([r["voice"] for r in recipes]))
    os.replace(tmp, path)  # atomic: a reader never sees half a file


def _load(path: str) -> tuple:
    with np.load(path) as f:
        pcm, lengths = f["pcm"].astype(np.float32) / 32768.0, f["lengths"]
        return np.split(pcm, np.cumsum(lengths)[:-1]), f["digits"].tolist(), f["voices"].tolist()


def load_spoken_digits(split: str = "train", n: int = 2000, *, seed: int = 0, min_digits: int = 1,
                       max_digits: int = 7, sample_rate: int = SAMPLE_RATE,
                       cache_dir: Optional[str] = None) -> SpokenDigits:
    """Digit strings spoken by espeak-ng voices (synthesized on the first call, then read from the cache).

    Parameters
    ----------
    split : {"train", "test"}
        The test split's voices are never in the train split (see the module docstring).
    n : int >= 1, default 2000
        Utterances. Utterance ``i`` depends only on ``(split, seed, i)`` and the digit range, so a set of
        ``n`` is a prefix of any larger one.
    seed : int, default 0
    min_digits, max_digits : int, default 1 and 7
        Digits per utterance (uniform).
    sample_rate : int, default 8000
    cache_dir : str, optional
        See :func:`cache_directory`.

    Returns
    -------
    SpokenDigits

    Raises
    ------
    DatasetNotAvailable
        When espeak-ng is not installed (and the set is not cached yet); the message says how to install it.
    """
    split = Options("train", "test").check(split, "split")
    n, seed = check_int(n, "n", 1), check_int(seed, "seed", 0)
    min_digits = check_int(min_digits, "min_digits", 1)
    max_digits = check_int(max_digits, "max_digits", min_digits)
    sample_rate = check_int(sample_rate, "sample_rate", 1000)
    name = f"spoken_digits-v{_VERSION}-{split}-n{n}-s{seed}-d{min_digits}-{max_digits}-{sample_rate}hz.npz"
    path = os.path.join(cache_directory(cache_dir), name)
    if not os.path.exists(path):
        voices = digit_voices(split)
        recipes = [_recipe(split, i, seed, min_digits, max_digits, voices) for i in range(n)]
        _save(path, _synthesize_all(recipes, sample_rate), recipes)
    signals, digits, voices = _load(path)
    return SpokenDigits(signals, digits, voices, sample_rate)


# ---------------------------------------------------------------------------------------- recordings
def _transcripts() -> dict:
    """``{"0": "zero", ...}`` from the Asterisk transcripts file, or {} when it is not installed."""
    if not os.path.exists(_TRANSCRIPTS):
        return {}
    out = {}
    with gzip.open(_TRANSCRIPTS, "rt", encoding="utf-8", errors="replace") as f:
        for line in f:
            key, _, text = line.partition(":")
            if key.startswith("digits/"):
                out[key[len("digits/"):].strip()] = text.strip().lower()
    return out


def _recorded_singles(sample_rate: int) -> List[np.ndarray]:
    if not os.path.isdir(_ASTERISK):
        raise DatasetNotAvailable(f"the recorded digits need the Debian packages asterisk-core-sounds-en-wav "
                                  f"(and asterisk-core-sounds-en for the transcripts), not installed ({_ASTERISK} "
                                  f"is missing): install them with `{_APT_ASTERISK}`",
                                  package="asterisk-core-sounds-en-wav", path=_ASTERISK)
    said = _transcripts()
    for d, word in enumerate(DIGIT_WORDS):
        if said and said.get(str(d)) != word:
            raise ValueError(f"{_TRANSCRIPTS} says digits/{d} is {said.get(str(d))!r}, expected {word!r}")
    return [_trim(read_audio(os.path.join(_ASTERISK, f"{d}.wav"), sample_rate)[0]) for d in range(10)]


def _trim(x: np.ndarray, rel: float = 0.02, keep: int = 400) -> np.ndarray:
    """``x`` without its leading and trailing silence (below ``rel`` of the peak), ``keep`` samples kept."""
    loud = np.flatnonzero(np.abs(x) >= rel * np.abs(x).max())
    if loud.size == 0:
        return x
    return x[max(0, loud[0] - keep):loud[-1] + keep + 1]


def load_recorded_digits(n_strings: int = 0, *, seed: int = 0, min_digits: int = 2, max_digits: int = 7,
                         sample_rate: int = SAMPLE_RATE) -> SpokenDigits:
    """Real recordings of one speaker: the ten digits "zero" .. "nine" (Asterisk's Allison prompts), then
    ``n_strings`` digit strings made of those recordings (leading and trailing silence trimmed) joined by
    seeded pauses of 50-300 ms (Gaussian noise at the level of the recordings' own quiet edges).

    Parameters
    ----------
    n_strings : int >= 0, default 0
    seed : int, default 0
    min_digits, max_digits : int, default 2 and 7
        Digits per joined string.
    sample_rate : int, default 8000 (the recordings' own)

    Returns
    -------
    SpokenDigits
        The 10 single digits first (``digits`` "0" .. "9"), then the strings; ``voices`` "allison".

    Raises
    ------
    DatasetNotAvailable
        When ``asterisk-core-sounds-en-wav`` is not installed; the message says how to install it.
    """
    n_strings, seed = check_int(n_strings, "n_strings", 0), check_int(seed, "seed", 0)
    min_digits = check_int(min_digits, "min_digits", 1)
    max_digits = check_int(max_digits, "max_digits", min_digits)
    sample_rate = check_int(sample_rate, "sample_rate", 1000)
    singles = _recorded_singles(sample_rate)
    signals, digits = [singles[d] for d in range(10)], [str(d) for d in range(10)]
    rng = np.random.default_rng(seed)
    floor = float(np.sqrt(np.mean(np.concatenate([s[:200] for s in singles]) ** 2)))  # the room's noise

    def pause(seconds):  # the recordings' background level, not digital silence
        return (rng.standard_normal(int(seconds * sample_rate)) * floor).astype(np.float32)

    for _ in range(n_strings):
        ds = rng.integers(0, 10, int(rng.integers(min_digits, max_digits + 1)))
        parts = []
        for d in ds:
            parts += [pause(rng.uniform(0.05, 0.3)), singles[d]]
        signals.append(np.concatenate(parts + [pause(0.1)]))
        digits.append("".join(str(d) for d in ds))
    return SpokenDigits(signals, digits, ["allison"] * len(digits), sample_rate)
