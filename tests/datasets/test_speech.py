"""rnnfast.datasets.speech: spoken digits synthesized with espeak-ng (skipped when it is absent), the
Asterisk recordings (skipped when the Debian package is absent), and the helpers on made-up inputs."""
import os
import shutil

import numpy as np
import pytest

from rnnfast.datasets import DatasetNotAvailable, speech

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None,
                                  reason="espeak-ng is not installed (sudo apt-get install espeak-ng)")
needs_asterisk = pytest.mark.skipif(not os.path.isdir(speech._ASTERISK),
                                    reason="asterisk-core-sounds-en-wav is not installed "
                                           "(sudo apt-get install asterisk-core-sounds-en-wav)")


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("speech-cache"))


def test_voices_are_held_out_by_name():
    train, test = speech.digit_voices("train"), speech.digit_voices("test")
    assert len(train) + len(test) == len(speech.ACCENTS) * len(speech.VARIANTS) == 210
    assert not set(train) & set(test) and 0.1 < len(test) / 210 < 0.25
    assert {v.split("+")[0] for v in test} <= set(speech.ACCENTS)
    with pytest.raises(ValueError):
        speech.digit_voices("valid")


def test_digits_to_words_and_features():
    assert speech.digits_to_words("3140") == "three one four zero"
    with pytest.raises(ValueError):
        speech.digits_to_words("3a")
    with pytest.raises(TypeError):
        speech.digits_to_words(314)
    t = np.arange(8000) / 8000
    f = speech.speech_features(np.sin(2 * np.pi * 440 * t) * (1 + t), 8000)
    assert f.shape == (99, 39) and f.dtype == np.float32
    np.testing.assert_allclose(f.mean(axis=0), 0, atol=1e-4)  # normalised per utterance
    raw = speech.speech_features(np.sin(2 * np.pi * 440 * t), 8000, n_mfcc=13, deltas=0, normalize=False)
    assert raw.shape == (99, 13)


def test_cache_directory_env(monkeypatch, tmp_path):
    monkeypatch.setenv("RNNFAST_CACHE_DIR", str(tmp_path / "c"))
    assert speech.cache_directory() == str(tmp_path / "c") and os.path.isdir(tmp_path / "c")
    assert speech.cache_directory(str(tmp_path / "d")) == str(tmp_path / "d")


def test_missing_espeak_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(DatasetNotAvailable, match="apt-get install espeak-ng"):
        speech.load_spoken_digits("train", 2, cache_dir=str(tmp_path))


def test_missing_recordings_say_how_to_install(monkeypatch):
    monkeypatch.setattr(speech, "_ASTERISK", "/nonexistent/asterisk")
    with pytest.raises(DatasetNotAvailable, match="asterisk-core-sounds-en-wav"):
        speech.load_recorded_digits()


@needs_espeak
def test_synthesized_slice_is_cached_and_a_prefix(cache):
    a = speech.load_spoken_digits("test", 6, seed=3, cache_dir=cache)
    assert len(a) == 6 and a.sample_rate == 8000
    assert all(v in speech.digit_voices("test") for v in a.voices)
    assert all(1 <= len(d) <= 7 and d.isdigit() for d in a.digits)
    assert all(x.dtype == np.float32 and 0.2 * 8000 < x.size < 8 * 8000 and np.abs(x).max() <= 1 for x in a.audio)
    files = os.listdir(cache)
    again = speech.load_spoken_digits("test", 6, seed=3, cache_dir=cache)  # from the cache: no new file
    assert os.listdir(cache) == files and again.digits == a.digits
    np.testing.assert_array_equal(again.audio[0], a.audio[0])
    b = speech.load_spoken_digits("test", 3, seed=3, cache_dir=cache)
    assert b.digits == a.digits[:3] and b.voices == a.voices[:3]
    train = speech.load_spoken_digits("train", 3, seed=3, cache_dir=cache, max_digits=2)
    assert all(v in speech.digit_voices("train") for v in train.voices) and all(len(d) <= 2 for d in train.digits)
    feats = a.features()
    assert all(f.shape[1] == 39 and abs(f.shape[0] - x.size / 80) <= 3 for f, x in zip(feats, a.audio))
    for bad in (dict(split="valid"), dict(n=0), dict(min_digits=3, max_digits=2)):
        with pytest.raises(ValueError):
            speech.load_spoken_digits(**{"split": "test", "n": 1, "cache_dir": cache, **bad})


@needs_asterisk
def test_recorded_digits():
    r = speech.load_recorded_digits(4, seed=1)
    assert r.digits[:10] == [str(d) for d in range(10)] and len(r) == 14 and r.voices[0] == "allison"
    assert all(2 <= len(d) <= 7 for d in r.digits[10:])
    assert all(0.2 * 8000 < x.size < 1.5 * 8000 for x in r.audio[:10])  # single words, silence trimmed
    assert r.words()[3] == "three"
    r16 = speech.load_recorded_digits(sample_rate=16000)
    assert abs(r16.audio[3].size - 2 * r.audio[3].size) <= 2 * 400 + 4
