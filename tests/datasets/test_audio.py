"""Speech features against python_speech_features (its defaults and other settings), deltas, bad input."""
import numpy as np
import pytest

from rnnfast.datasets import audio

psf = pytest.importorskip("python_speech_features")


def tone(seconds=0.5, rate=16000, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    return np.sin(2 * np.pi * 440 * t) + 0.3 * np.sin(2 * np.pi * 1234 * t) + 0.05 * rng.standard_normal(t.size)


def test_mfcc_defaults_match_python_speech_features():
    x = tone()
    ours = audio.mfcc(x, 16000)
    ref = psf.mfcc(x, 16000)
    assert ours.shape == ref.shape == (49, 13)
    np.testing.assert_allclose(ours, ref, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("rate, kw, ref_kw", [
    (8000, dict(n_mfcc=20, n_filters=40, n_fft=256), dict(numcep=20, nfilt=40, nfft=256)),
    (16000, dict(window="hamming", lifter=0, append_energy=False),
     dict(winfunc=np.hamming, ceplifter=0, appendEnergy=False)),
    (22050, dict(frame_length=0.02, frame_step=0.015, low_freq=300, high_freq=8000, preemphasis=0.0, n_fft=512),
     dict(winlen=0.02, winstep=0.015, lowfreq=300, highfreq=8000, preemph=0.0, nfft=512)),
])
def test_mfcc_other_settings_match(rate, kw, ref_kw):
    x = tone(0.3, rate, seed=1)
    np.testing.assert_allclose(audio.mfcc(x, rate, **kw), psf.mfcc(x, rate, **ref_kw), rtol=1e-9, atol=1e-9)


def test_log_mel_energies_and_filterbank_match():
    x = tone(0.2)
    np.testing.assert_allclose(audio.log_mel_energies(x, 16000), psf.logfbank(x, 16000), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(audio.mel_filterbank(26, 512, 16000), psf.get_filterbanks(26, 512, 16000),
                               rtol=1e-12, atol=0)
    np.testing.assert_allclose(audio.mel_filterbank(40, 256, 8000, 100, 3000),
                               psf.get_filterbanks(40, 256, 8000, 100, 3000), rtol=1e-12, atol=0)


def test_short_signal_silence_and_integer_pcm():
    assert audio.mfcc(tone(0.01), 16000).shape == (1, 13)  # shorter than a frame: one padded frame
    silent = audio.mfcc(np.zeros(1600), 16000)
    assert np.all(np.isfinite(silent))
    np.testing.assert_allclose(silent, psf.mfcc(np.zeros(1600), 16000), rtol=1e-9, atol=1e-9)
    pcm = (tone(0.1) * 8000).astype(np.int16)
    np.testing.assert_allclose(audio.mfcc(pcm, 16000), psf.mfcc(pcm.astype(float), 16000), rtol=1e-9, atol=1e-9)


def test_delta_matches_and_mfcc_appends_deltas():
    rng = np.random.default_rng(2)
    f = rng.standard_normal((30, 5))
    for N in (1, 2, 3):
        np.testing.assert_allclose(audio.delta(f, N), psf.delta(f, N), rtol=1e-12, atol=1e-12)
    x = tone(0.3)
    base = audio.mfcc(x, 16000)
    full = audio.mfcc(x, 16000, deltas=2)
    assert full.shape == (base.shape[0], 39)
    np.testing.assert_allclose(full[:, :13], base)
    np.testing.assert_allclose(full[:, 13:26], psf.delta(base, 2), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(full[:, 26:], psf.delta(psf.delta(base, 2), 2), rtol=1e-10, atol=1e-12)
    # a linear ramp has a constant delta equal to its slope
    ramp = np.arange(10.0)[:, None] * 3
    np.testing.assert_allclose(audio.delta(ramp, 2)[2:-2], 3.0)


def test_n_fft_grows_for_long_frames():
    x = tone(0.1, 44100)
    ours = audio.mfcc(x, 44100)  # a 1103-sample frame: n_fft 2048, where psf would truncate it to 512
    np.testing.assert_allclose(ours, psf.mfcc(x, 44100, nfft=2048), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("call, exc", [
    (lambda: audio.mfcc(np.zeros((2, 100)), 16000), ValueError),
    (lambda: audio.mfcc(np.array([]), 16000), ValueError),
    (lambda: audio.mfcc(np.array(["a", "b"]), 16000), TypeError),
    (lambda: audio.mfcc(np.array([1 + 1j]), 16000), TypeError),
    (lambda: audio.mfcc(np.array([np.nan, 1.0]), 16000), ValueError),
    (lambda: audio.mfcc(tone(0.1), 0), ValueError),
    (lambda: audio.mfcc(tone(0.1), -8000), ValueError),
    (lambda: audio.mfcc(tone(0.1), "16000"), TypeError),
    (lambda: audio.mfcc(tone(0.1), 16000, n_mfcc=27), ValueError),
    (lambda: audio.mfcc(tone(0.1), 16000, n_fft=256), ValueError),
    (lambda: audio.mfcc(tone(0.1), 16000, high_freq=9000), ValueError),
    (lambda: audio.mfcc(tone(0.1), 16000, preemphasis=1.5), ValueError),
    (lambda: audio.mfcc(tone(0.1), 16000, window="kaiser"), ValueError),
    (lambda: audio.mfcc(tone(0.1), 16000, window=3), TypeError),
    (lambda: audio.mfcc(tone(0.1), 16000, deltas=3), ValueError),
    (lambda: audio.mfcc(tone(0.1), 16000, frame_step=0.0), ValueError),
    (lambda: audio.delta(np.zeros(5)), ValueError),
    (lambda: audio.delta(np.zeros((5, 2)), N=0), ValueError),
])
def test_bad_input(call, exc):
    with pytest.raises(exc):
        call()


def test_reachable_from_the_package():
    import rnnfast.datasets
    assert rnnfast.datasets.audio.mfcc is audio.mfcc
