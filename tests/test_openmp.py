"""rnnfast's OpenMP runtime and PyTorch's in one process, imported in either order.

Each order runs in a fresh interpreter (the import order only matters before either library is loaded):
a multi-threaded rnnfast LSTM call, a multi-threaded torch LSTM call on the same weights, the two
outputs compared, then rnnfast again after torch's threads have run. A hang (two runtimes fighting over
the threads) fails through the subprocess timeout, a crash through the return code.
"""
import textwrap

import pytest
from _child import run_python

pytest.importorskip("torch")

_SCRIPT = textwrap.dedent("""
    import sys
    first, second = sys.argv[1:3]
    __import__(first)
    __import__(second)
    import numpy as np
    import rnnfast as rf
    import torch

    torch.set_num_threads(2)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 30, 16)).astype(np.float32)
    ours = rf.nn.LSTM(16, 48, num_layers=2, bidirectional=True, seed=0).eval()
    out, _ = ours(x, n_threads=2)                                   # rnnfast's threads first
    theirs = torch.nn.LSTM(16, 48, num_layers=2, bidirectional=True, batch_first=True)
    theirs.load_state_dict({k: torch.from_numpy(v) for k, v in ours.state_dict().items()})
    with torch.inference_mode():
        ref = theirs(torch.from_numpy(x))[0].numpy()                # then torch's
    again, _ = ours(x, n_threads=2)                                 # and rnnfast's again
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(out, again)
    with open("/proc/self/maps") as f:
        libs = {line.split()[-1].rsplit("/", 1)[-1] for line in f}
    runtimes = sorted(n for n in libs if n.startswith(("libgomp", "libiomp", "libomp")))
    print("ok", first, second, runtimes)
""")


@pytest.mark.parametrize("first, second", [("torch", "rnnfast"), ("rnnfast", "torch")],
                         ids=["torch-then-rnnfast", "rnnfast-then-torch"])
def test_both_openmp_runtimes_work_in_one_process(first, second, tmp_path):
    res = run_python(["-c", _SCRIPT, first, second], tmp_path, timeout=180)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.startswith(f"ok {first} {second}"), res.stdout
