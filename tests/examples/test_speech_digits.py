"""examples/speech_digits.py on a tiny slice (synthesized into a temporary cache): skipped when espeak-ng
or the Asterisk recordings are absent."""
import importlib.util
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
if not (EXAMPLES / "speech_digits.py").exists():
    pytest.skip(f"the example scripts are not there ({EXAMPLES})", allow_module_level=True)
if str(EXAMPLES) not in sys.path:
    sys.path.insert(0, str(EXAMPLES))


@pytest.fixture(scope="module")
def m():
    spec = importlib.util.spec_from_file_location("speech_digits", EXAMPLES / "speech_digits.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_help(m, capsys):
    with pytest.raises(SystemExit) as e:
        m.main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert all(opt in out for opt in ("--seconds", "--epochs", "--plot", "--labels", "--torch"))


def test_stack_frames_and_text(m):
    f = np.arange(14, dtype=np.float32).reshape(7, 2)
    s = m.stack_frames(f, 3)
    assert s.shape == (3, 6)
    np.testing.assert_array_equal(s[0], [0, 1, 2, 3, 4, 5])
    np.testing.assert_array_equal(s[2], [12, 13, 0, 0, 0, 0])
    assert m.stack_frames(f, 1) is f
    assert m.as_text(["one two", ["three", "four"]]) == ["one two", "three four"]


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed "
                    "(sudo apt-get install espeak-ng)")
@pytest.mark.skipif(not os.path.isdir("/usr/share/asterisk/sounds/en_US_f_Allison/digits"),
                    reason="asterisk-core-sounds-en-wav is not installed")
def test_tiny_run(m, tmp_path, capsys):
    res = m.main(["--train-size", "48", "--test-size", "8", "--real-strings", "2", "--epochs", "3",
                  "--hidden", "16", "--layers", "1", "--batch-size", "8", "--lr", "0.01", "--quiet", "--augment", "0",
                  "--cache-dir", str(tmp_path / "cache"), "--plot", str(tmp_path / "sd.png"), "--labels", "words"]
                 + (["--torch"] if importlib.util.find_spec("torch") else []))
    out = capsys.readouterr().out
    assert "held-out voices: CER / WER" in out and "real voice" in out
    assert res["epochs"] == 3 and len(res["curve"]) == 3
    assert res["history"]["loss"][-1] < res["history"]["loss"][0]  # it learns
    assert all(0 <= r <= 5 for r in res["test"] + res["real"])
    if importlib.util.find_spec("torch"):
        (cer, wer), wall = res["torch"]  # the PyTorch twin ran the same epochs
        assert 0 <= cer <= 5 and wall > 0
    if m.new_figure()[0] is not None:
        assert res["plot"] and os.path.exists(res["plot"])
