"""bench/small_calls.py: its seeded shapes are small calls, and a race runs the rule on and off."""
import small_calls  # bench/, put on sys.path by this folder's conftest.py

from rnnfast._planner import TABLE


def test_seeded_shapes_are_small_calls():
    names = small_calls.seeded(6, seed=3)
    assert len(names) == 6 and names == small_calls.seeded(6, seed=3)
    for name in names:
        layer, x, _ = small_calls.make(name)
        c = layer.eval()._describe(x, None, False)
        assert 2.0 * c.N * c.cell.gates * c.H * (c.I + c.H) * c.L * c.D < TABLE["min_parallel_flops"]


def test_race_times_both_ways_where_the_rule_applies():
    t = TABLE["small_min_t"]
    on, off = small_calls.race(f"gru-B12-T{t}-I2-H8-L1-bi-infer", 0, rounds=2, calls=5)
    assert on > 0 and off > 0
    assert small_calls.race(f"gru-B12-T{t // 2}-I2-H8-L1-bi-infer", 0, rounds=2, calls=5) is None  # (short)
