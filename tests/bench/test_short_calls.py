"""bench/short_calls.py: the plans it races agree on the output, and the step timing leaves the planner's
table as it found it."""
import rnnfast as rf
import short_calls  # bench/, put on sys.path by this folder's conftest.py
from rnnfast import _planner


def test_race_times_the_three_plans_of_a_short_call():
    res = short_calls.race(rf.nn.GRU, 24, 3, 2, threads=2, rounds=2)  # (asserts their outputs equal)
    assert [label for label, _ in res] == ["blas", "rows in place", "packed"]
    assert all(us > 0 for _, us in res)


def test_steps_restore_the_short_call_rule():
    rule = _planner.TABLE["short_rows_min_bytes"]
    off, on = short_calls.steps(16, 2, threads=1, rounds=2)
    assert off > 0 and on > 0 and _planner.TABLE["short_rows_min_bytes"] == rule


def test_linear_restores_the_few_rows_switch():
    from rnnfast._kernels import _recurrent as k
    most = k.FEW_ROWS_MAX
    off, on = short_calls.linear(64, 32, 3, threads=1, rounds=2)
    assert off > 0 and on > 0 and k.FEW_ROWS_MAX == most


def test_linear_rows_sweep_marks_the_rule_and_restores_the_switch():
    from rnnfast._kernels import _recurrent as k
    most = k.FEW_ROWS_MAX
    res = short_calls.linear_rows(2, 2, rows=(32, 300), shapes=[(1024, 128)])
    assert [(K, N, M, inside) for K, N, M, _, inside in res] == [(1024, 128, 32, True), (1024, 128, 300, False)]
    assert all(r > 0 for _, _, _, r, _ in res) and k.FEW_ROWS_MAX == most


def test_short_rule_races_only_the_plans_it_changes_and_restores_the_table():
    bound = _planner.TABLE["short_blas_max_bgt"]
    ratios = short_calls.short_rule(threads=1, n=4, rounds=2)
    changed = 0
    for cell, B, T, I, H, L, bi in short_calls.seeded_shapes(4):
        G = {"lstm": 4, "gru": 3, "rnn": 1}[cell]
        changed += B * T * G > bound and not (B == 1 and not bi)
    assert len(ratios) <= changed and all(r > 0 for r in ratios)
    assert _planner.TABLE["short_blas_max_bgt"] == bound
