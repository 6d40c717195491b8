"""bench/plan_ab.py: every candidate of a point raced, the chosen plan marked, and the sweep's summary of the
planner's misses (timing-free assertions: what is raced and how a miss is counted)."""
import plan_ab  # bench/, put on sys.path by this folder's conftest.py


def test_grid_names_select_as_grid_does():
    names = plan_ab.grid_names("tiny", quick=True)
    assert names and all("-infer" in n or "-train" in n for n in names)
    assert set(names) < set(plan_ab.grid_names(".", quick=False))
    assert plan_ab.grid_names("no-such-point", quick=False) == []


def test_a_miss_needs_the_median_and_the_fastest_round():
    slow, fast = [2.0, 2.1, 2.2], [1.0, 1.1, 1.2]
    results = {
        "a": (slow, ("packed proj=step split=nonex1", fast)),  # beaten both ways: a miss of 2x
        "b": ([1.0, 2.0, 2.1], ("units proj=gemm split=unitsx2", [1.5, 1.6, 1.7])),  # its fastest round wins
        "c": (fast, ("packed proj=gemm split=rowsx2", slow)),  # the planner's plan is the fastest
        "d": (fast, None),  # a single candidate
    }
    assert plan_ab.misses(results, 0.05) == [(2.1 / 1.1, "a", "packed proj=step split=nonex1")]
    assert plan_ab.gap(*results["a"]) == 2.1 / 1.1
    assert plan_ab.gap(*results["c"]) == 1.0


def test_run_races_every_candidate_and_reports_the_fastest_other(capsys):
    mine, rival = plan_ab.run("lstm-B2-T5-I3-H8-L1-uni-infer", threads=2, rounds=1, batch_ratio=True)
    out = capsys.readouterr().out
    assert len(mine) == 1 and rival is not None and len(rival[1]) == 1
    assert out.count("* ") == 1 and "B=1: " in out and "B=2 / B=1" in out
    assert rival[0] in out and not rival[0].startswith("*")


def test_random_names_are_seeded_shapes_the_planner_reads():
    names = plan_ab.random_names(20)
    assert names == plan_ab.random_names(20) and names != plan_ab.random_names(20, seed=6)
    lines = plan_ab.plans_of(names[:5], 2)
    assert [ln.split(" ", 2)[:2] for ln in lines] == [[n, "2"] for n in names[:5]]


def test_against_old_reports_only_the_points_whose_plan_changed():
    times = {"p": {"* packed proj=gemm split=nonex1": [1.0, 1.0], "  units proj=step split=nonex1": [2.0, 2.0]},
             "q": {"* packed proj=gemm split=nonex1": [1.0], "  units proj=step split=nonex1": [0.5]}}
    old = ["p 1 units proj=step split=nonex1", "q 1 packed proj=gemm split=nonex1", "p 2 units proj=step split=nonex1"]
    assert plan_ab.against_old(old, times, 1) == [("p", "units proj=step split=nonex1",
                                                    "packed proj=gemm split=nonex1", 2.0)]


def test_parse_plan_reads_what_a_plan_prints():
    """--old-plans races an old build's plan even where this planner no longer offers it: the printed
    plan is read back whole."""
    from rnnfast._planner import Plan

    for p in [Plan("units", "gemm", "units", 2, True), Plan("blas", "gemm", "none", 1),
              Plan("latency", "step", "none", 1, False), Plan("packed", "step", "rows", 2)]:
        assert plan_ab.parse_plan(str(p)) == p


def test_calls_in_a_row_time_all_but_the_first(monkeypatch):
    """--calls N: each round runs a plan N times in a row and records the mean of all but the first (the
    plan's steady state); the layer keeps every raced plan's weight packs meanwhile."""
    seen = []
    ticks = iter([5.0, 1.0, 3.0, 7.0, 2.0, 4.0] * 4)
    monkeypatch.setattr(plan_ab, "once", lambda layer, x, training, plan: seen.append(
        getattr(layer, "_packs_most", None)) or next(ticks))
    monkeypatch.setattr(plan_ab, "CALLS", 3)
    layer = type("L", (), {"_packs": {}})()
    res = plan_ab.race([("a", layer, None, False, None), ("b", layer, None, False, None)], rounds=1)
    # the warm-up round (reversed: b takes 5, 1, 3, then a 7, 2, 4) untimed; round 1 in order: a takes 5, 1, 3
    # (the mean of 1 and 3), b 7, 2, 4
    assert dict(res) == {"a": [2.0], "b": [3.0]}
    assert seen and all(m is not None and m >= 2 for m in seen)
    assert not hasattr(layer, "_packs_most")


def test_kept_rule_races_only_shapes_whose_plans_differ(monkeypatch, capsys):
    raced = []

    def fake_race(entries, rounds):
        raced.append((entries[0][4], entries[1][4]))
        return [("A", [2.0]), ("B", [1.0])]

    monkeypatch.setattr(plan_ab, "race", fake_race)
    plan_ab.kept_rule(3, seed=1, threads=2, rounds=1)
    out = capsys.readouterr().out
    assert len(raced) == 3 and all(a != b and not a.panels and b.panels for a, b in raced)
    assert "geometric mean A/B 2.000" in out
