"""bench/_runner.py's view of who else runs around a round: threads waiting for a core, the settle before a
round, the record of a round's disturbances and rnnfast's counters in a round's answer. A spinning child
process stands in for a peer's pool thread; the assertions hold however busy the machine is."""
import subprocess
import sys
import time

import pytest

import _runner  # bench/, put on sys.path by this folder's conftest.py
import grid
from _runner import RoundWatch, interference, make_data, wait_quiet

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")

SPIN = "import sys, time\nt = time.perf_counter() + float(sys.argv[1])\nwhile time.perf_counter() < t: pass\n" \
       "time.sleep(60)\n"


@pytest.fixture
def spinner():
    """Start a child that spins for the given seconds, then sleeps; killed at the end."""
    kids = []

    def start(seconds):
        p = subprocess.Popen([sys.executable, "-c", SPIN, str(seconds)])
        kids.append(p)
        return p

    yield start
    for p in kids:
        p.kill()
        p.wait()


def test_a_spinning_thread_is_runnable_and_a_sleeping_one_not(spinner):
    p = spinner(30.0)
    t_end = time.perf_counter() + 5
    while _runner._runnable([p.pid]) == 0 and time.perf_counter() < t_end:
        time.sleep(0.01)  # (its interpreter starting)
    assert _runner._runnable([p.pid]) == 1
    p.kill()
    p.wait()
    assert _runner._runnable([p.pid]) == 0  # (gone: nothing to read)


def test_wait_quiet_waits_for_a_spinner_to_stop(spinner):
    p = spinner(0.4)
    time.sleep(0.1)
    waited = wait_quiet([p.pid], limit=10.0)
    assert 0.1 < waited < 10.0
    assert _runner._runnable([p.pid]) == 0
    assert wait_quiet([p.pid], limit=10.0) < 0.5  # now asleep


def test_round_watch_sees_a_peer_spinning_during_a_round(spinner):
    p = spinner(30.0)
    quiet = spinner(0.0)
    time.sleep(0.2)
    watch = RoundWatch(quiet.pid, {"peer": p.pid, "idle": quiet.pid})
    watch.start()
    time.sleep(0.3)
    seen = watch.stop()
    assert seen["peer"] > 0.02 and seen["idle"] < 0.02 and seen["driver"] < 0.5
    assert seen.get("machine", 0.0) >= 0.0


def test_interference_sums_up_the_rounds():
    r = {"rounds_others": [{"driver": 0.0, "onnxruntime": 0.3, "machine": 0.2, "settle_s": 0.01},
                           {"driver": 0.01, "onnxruntime": 0.0, "machine": 0.6, "settle_s": 0.03}],
         "rounds_counters": [{"calls": 4, "busy": 1, "serial": 0}, {"calls": 1, "busy": 1, "serial": 3}]}
    f = interference(r)
    assert f["others"] == pytest.approx(0.3) and f["machine"] == pytest.approx(0.4)
    assert f["settle_s"] == 0.03 and (f["calls"], f["busy"], f["serial"]) == (5, 2, 3)
    text = grid.format_interference(f)
    assert "busy 2/5 calls, 3 on one thread" in text and "peers 0.30 core" in text and "machine 0.40" in text
    assert grid.format_interference(interference({})) == ""
    note = grid.disturbed_note([{"name": "a", "interference": f}, {"name": "b", "interference": interference({})}])
    assert "1 of 2 points" in note and note.endswith(": a")
    assert grid.disturbed_note([{"name": "b"}]) == ""


def test_rnnfast_rounds_report_the_thread_policy_counters(tmp_path):
    case = dict(name="t", kind="seq", cell="gru", shape="grid", mode="infer", B=1, T=5, I=4, H=6, layers=1,
                bidirectional=False, flop=1.0, impls=_runner.seq_impls("infer"))
    path = tmp_path / "data.npz"
    make_data(case, str(path))
    w = _runner.WorkerProc("rnnfast", 2, str(tmp_path), 120)
    try:
        assert w.recv()["ok"]
        assert w.call(cmd="setup", impl="rnnfast", case=case, data=str(path), variant=None,
                      check_out=str(tmp_path / "c.npz"))["ok"]
        ans = w.call(cmd="round", impl="rnnfast", iters=3)
        assert ans["ok"] and {"calls", "busy", "serial", "backoffs"} <= set(ans["counters"])
        assert all(v >= 0 for v in ans["counters"].values())
    finally:
        w.close()
