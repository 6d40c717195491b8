"""bench/fit_table.py: reads plan_ab.py's sweeps, scores the planner's picks against the fastest plans and
fits TABLE without leaving it changed."""
import math

import fit_table  # bench/, put on sys.path by this folder's conftest.py
from rnnfast import _planner, _tune

NAMES = ["lstm-B6-T100-I128-H200-L1-uni-infer", "gru-B4-T50-I256-H256-L1-uni-train"]


def _sweep(chosen_ms: float, other_ms: float) -> list:
    """plan_ab.py-shaped lines: each point's chosen plan at chosen_ms, its other candidates at other_ms."""
    lines = []
    for name in NAMES:
        call = fit_table._call(name)
        chosen = _planner.plan_call(call, 2)
        lines.append(f"{name}  threads=2  rounds=5\n")
        for p in _tune._candidates(call, 2):
            ms = chosen_ms if p == chosen else other_ms
            star = "*" if p == chosen else " "
            lines.append(f"  {star} {str(p):40s}  min {ms:8.3f}  median {ms:8.3f} ms  ( 1.00x best)  model   1.0\n")
    return lines


def test_parse_pools_repeated_blocks_and_drops_fast_points():
    pts = fit_table.parse(_sweep(2.0, 1.0) + _sweep(4.0, 1.0))
    assert set(pts) == {(n, 2) for n in NAMES}
    chosen = str(_planner.plan_call(fit_table._call(NAMES[0]), 2))
    assert pts[(NAMES[0], 2)][chosen] == 3.0  # (the median of 2 and 4)
    assert fit_table.parse(_sweep(0.05, 0.05), min_ms=0.2) == {}


def test_score_is_the_geometric_mean_of_chosen_over_fastest():
    s, misses = fit_table.score(fit_table.parse(_sweep(2.0, 1.0)))
    assert math.isclose(s, 2.0) and len(misses) == 2 and all(math.isclose(m[0], 2.0) for m in misses)
    s, misses = fit_table.score(fit_table.parse(_sweep(1.0, 3.0)))
    assert math.isclose(s, 1.0) and misses == []


def test_fit_reports_factors_and_restores_the_table():
    before = dict(_planner.TABLE)
    moved = fit_table.fit(fit_table.parse(_sweep(2.0, 1.0)), keys=["core_flops", "cell_s"], rounds=1)
    assert _planner.TABLE == before
    assert set(moved) <= {"core_flops", "cell_s"} and all(f in fit_table.FACTORS for f in moved.values())
