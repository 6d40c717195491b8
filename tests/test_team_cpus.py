"""The kernels' move off a shared CPU (csrc/rf_latency.h: rf_leave_shared_cpu for the barrier kernels,
rf_leave_cpu for the packed kernel's tasks): batch 1, few rows and row blocks.

A pool thread woken onto the caller's CPU changes its own affinity mask for a moment to leave that CPU,
then takes its mask back. These tests run in a child interpreter (masks are per process) and check that
no thread is ever left with another mask than it had, that a mask of one CPU is respected, and that the
answers are those of one thread.
"""
import os
import textwrap

import pytest
from _child import run_python

if not hasattr(os, "sched_getaffinity") or len(os.sched_getaffinity(0)) < 2:
    pytest.skip("needs Linux and two CPUs", allow_module_level=True)

_SCRIPT = textwrap.dedent("""
    import os, sys, time
    import numpy as np
    import rnnfast as rf
    from rnnfast._planner import TABLE

    TABLE["latency_min_split_bytes"] = 0  # (batch 1 on two threads whatever the size)
    pin = sys.argv[1] == "pin"
    own = os.sched_getaffinity(0)
    if pin:
        own = {min(own)}
        os.sched_setaffinity(0, own)   # before the first call: the pool threads inherit it
    masks = lambda: {int(t): os.sched_getaffinity(int(t)) for t in os.listdir("/proc/self/task")}
    before = masks()  # (threads that numpy's BLAS started at import keep theirs)
    rng = np.random.default_rng(0)
    cases = [(rf.nn.GRU(64, 256, seed=0).eval(), rng.standard_normal((4, 30, 64)).astype(np.float32)),
             (rf.nn.LSTM(32, 128, seed=1).eval(), rng.standard_normal((1, 30, 32)).astype(np.float32)),
             (rf.nn.LSTM(16, 32, seed=2).eval(), rng.standard_normal((64, 20, 16)).astype(np.float32))]
    for m, x in cases:
        plan = m.plan_for(x, n_threads=2)
        assert plan.kernel in ("units", "latency", "packed") and plan.threads == 2, plan
        one = m(x, n_threads=1)[0]
        for i in range(40):
            np.testing.assert_allclose(m(x, n_threads=2)[0], one, rtol=1e-5, atol=1e-6)
            time.sleep(0.003 if i % 4 else 0.05)  # pauses after which the pool thread sleeps
    after = masks()
    assert len(after) > len(before), (before, after)  # the OpenMP pool thread
    assert all(v == before.get(t, own) for t, v in after.items()), (own, before, after)
    print("ok", len(after), sorted(own))
""")


@pytest.mark.parametrize("how", ["free", "pin"])
def test_threads_keep_their_masks(tmp_path, how):
    r = run_python(["-c", _SCRIPT, how], cwd=str(tmp_path), timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.startswith("ok"), r.stdout
