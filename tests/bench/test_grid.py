"""bench/grid.py without timing anything: the point set, its selection, the listing and the summary math."""
import hashlib
import math
import os
import subprocess
import sys

import pytest

import _cases  # bench/, put on sys.path by this folder's conftest.py
import grid

BENCH = os.path.dirname(os.path.abspath(grid.__file__))

REQUIRED_BATCHES = {1, 2, 3, 4, 6, 8, 16, 32, 64, 128, 256, 512}
# Changing the grid makes earlier runs incomparable: update this only on purpose (and say so in bench/README.md).
POINTS_SHA256 = "acac9b3c8bc83c97a63a6687a004281f6d425c23dfb9ccbfed0040a99a6f5da1"


def _names(points):
    return [p.name for p in points]


def test_point_set_is_fixed():
    a, b = grid.grid_points(), grid.grid_points()
    assert a == b
    assert _names(a) == _names(b)
    assert len(set(_names(a))) == len(a), "duplicate points"


def test_point_set_is_pinned():
    digest = hashlib.sha256("\n".join(_names(grid.grid_points())).encode()).hexdigest()
    assert digest == POINTS_SHA256, "the grid changed: earlier runs are no longer comparable"


def test_size_and_coverage():
    shapes = [p.shape for p in grid.grid_points()]
    assert len(shapes) >= 80
    assert {s.B for s in shapes} >= REQUIRED_BATCHES
    assert {(s.cell, s.mode) for s in shapes} == {(c, m) for c in ("lstm", "gru", "rnn") for m in ("infer", "train")}
    assert {s.layers for s in shapes} == {1, 2}
    assert {s.bidirectional for s in shapes} == {False, True}
    for cell in ("lstm", "gru", "rnn"):
        sub = [s for s in shapes if s.cell == cell]
        assert {s.bidirectional for s in sub} == {False, True}, cell
        assert {s.layers for s in sub} == {1, 2}, cell
    assert min(s.H for s in shapes) <= 16 and max(s.H for s in shapes) == 1024
    assert {48, 96, 200, 384, 600} <= {s.H for s in shapes}  # non-powers of two
    drawn = [p.shape for p in grid.grid_points() if p.tag != "issue"]  # the issue has one I = 8H case
    assert min(s.I for s in drawn) == 1 and max(s.I / s.H for s in drawn) == 4
    assert all(1 <= s.I <= 4 * s.H for s in drawn)
    assert min(s.T for s in shapes) == 8 and max(s.T for s in shapes) == 1000
    assert any(s.H <= 16 and s.I == 1 for s in shapes)  # tiny models


def test_issue_cases_are_in():
    named = {("lstm", 2, 100, 256, 512, "train"), ("lstm", 2, 100, 256, 512, "infer"),
             ("lstm", 8, 50, 1024, 128, "infer"), ("gru", 4, 50, 256, 256, "infer"),
             ("lstm", 8, 30, 512, 512, "infer"), ("lstm", 8, 30, 512, 512, "train"),
             ("lstm", 256, 20, 64, 64, "infer"), ("gru", 1, 20, 512, 1024, "infer"),
             ("lstm", 16, 50, 1024, 1024, "infer")}
    have = {(s.cell, s.B, s.T, s.I, s.H, s.mode) for s in (p.shape for p in grid.grid_points())
            if s.layers == 1 and not s.bidirectional}
    assert named <= have


def test_drawn_points_keep_to_the_budget():
    for p in grid.grid_points():
        if p.tag in ("sweep", "random"):  # the issue's and the tiny shapes are fixed
            assert grid.estimate_call_s(p.shape) <= grid.CALL_BUDGET_S, p.name


def test_quick_subset_is_fixed_and_smaller():
    full = grid.grid_points()
    quick = grid.select_points(full, quick=True)
    assert quick == grid.select_points(grid.grid_points(), quick=True)
    assert 10 < len(quick) < len(full) / 2
    assert {p.name for p in full if p.tag == "issue"} <= {p.name for p in quick}
    assert {p.shape.mode for p in quick} == {"infer", "train"}
    assert {p.shape.cell for p in quick} == {"lstm", "gru", "rnn"}


def test_only_filters_on_name_and_tag():
    pts = grid.grid_points()
    assert [p.tag for p in grid.select_points(pts, only="issue")] == ["issue"] * 9
    sel = grid.select_points(pts, only=r"^gru-B1-")
    assert sel and all(p.shape.cell == "gru" and p.shape.B == 1 for p in sel)
    assert grid.select_points(pts, only="no-such-point") == []


def test_list_prints_every_point(capsys):
    grid.main(["--list"])
    out = capsys.readouterr().out.splitlines()
    pts = grid.grid_points()
    for p in pts:
        assert any(line.startswith(p.name + " ") for line in out), p.name
    assert out[-1].startswith(f"{len(pts)} points")


def test_list_quick_only(capsys):
    grid.main(["--list", "--quick", "--only", "issue"])
    out = capsys.readouterr().out.splitlines()
    assert out[-1].startswith("9 points")


def test_list_from_the_command_line():
    r = subprocess.run([sys.executable, os.path.join(BENCH, "grid.py"), "--list", "--only", "tiny"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[-1].startswith(f"{len(grid.TINY_SHAPES)} points")


@pytest.mark.parametrize("argv", [["--threads", "0"], ["--rounds", "0"], ["--only", "("], ["--peers", "caffe", "--list"]])
def test_bad_options_exit(argv, capsys):
    with pytest.raises(SystemExit):
        grid.main(argv)


def test_summarize():
    s = grid.summarize([0.5, 2.0, 1.0, None])
    assert s["n"] == 3 and s["unrated"] == 1
    assert s["worst"] == 0.5
    assert math.isclose(s["geomean"], 1.0)
    assert math.isclose(s["share_ge_1"], 2 / 3)
    s = grid.summarize([4.0, 1.0, 0.25, 8.0])
    assert math.isclose(s["geomean"], (4 * 1 * 0.25 * 8) ** 0.25)
    assert s["worst"] == 0.25 and s["share_ge_1"] == 0.75
    assert grid.summarize([None]) == {"n": 0, "unrated": 1, "worst": None, "geomean": None, "share_ge_1": None}
    assert grid.summarize([])["n"] == 0


def test_summary_by_mode():
    results = [{"shape": {"mode": "infer"}, "ratio": 0.5}, {"shape": {"mode": "infer"}, "ratio": 2.0},
               {"shape": {"mode": "train"}, "ratio": 3.0}, {"shape": {"mode": "train"}, "ratio": None}]
    s = grid.summary_by_mode(results)
    assert math.isclose(s["infer"]["geomean"], 1.0) and s["infer"]["worst"] == 0.5
    assert s["train"]["n"] == 1 and s["train"]["unrated"] == 1 and s["train"]["share_ge_1"] == 1.0
    assert s["all"]["n"] == 3 and s["all"]["worst"] == 0.5
    assert math.isclose(s["all"]["geomean"], 3.0 ** (1 / 3))
    text = grid.format_summary(s)
    assert "infer" in text and "train" in text and "all" in text


def _record(rnnfast_s, **peers):
    impls = {"rnnfast": {"status": "ok", "median_s": rnnfast_s, "gflops": 2.0 / rnnfast_s / 1e9,
                         "info": {"plan": "packed"}}}
    for name, v in peers.items():
        impls[name] = {"status": "ok", "median_s": v} if isinstance(v, float) else {"status": v}
    return {"impls": impls, "wall_s": 1.0}


def test_point_result_takes_the_fastest_agreeing_peer():
    point = grid.Point(_cases.Shape("lstm", 2, 10, 4, 8), "test")
    res = grid.point_result(point, _record(0.010, torch=0.030, onnxruntime=0.020, tensorflow="disagrees"))
    assert res["fastest_peer"] == "onnxruntime"
    assert math.isclose(res["ratio"], 2.0)
    assert res["plan"] == "packed"
    assert res["peers"]["tensorflow"] == "disagrees"
    row = grid.format_row(res, ["torch", "onnxruntime", "tensorflow"])
    assert row.startswith(point.name) and "2.00" in row and "DIFF" in row and row.endswith("packed")
    none = grid.point_result(point, _record(0.010, torch="skipped"))
    assert none["ratio"] is None and none["fastest_peer"] is None


# ------------------------------------------------------------------------------------- --precision (issue 16)
LOWP = ["rnnfast", "rnnfast-bf16", "torch-bf16", "torch-autocast", "rnnfast-int8", "ort-int8"]


def test_precision_case_times_the_low_precision_paths():
    point = grid.Point(_cases.Shape("lstm", 2, 10, 4, 8), "test")
    case = grid._case(point, ["bf16", "int8"])
    assert [i["impl"] for i in case["impls"]] == LOWP
    assert all(i["rtol"] == 5e-2 for i in case["impls"][1:])  # looser than float32's --rtol: 8 bits / int8
    assert [i["impl"] for i in grid._case(point)["impls"]] == ["rnnfast", "torch", "onnxruntime", "tensorflow"]
    with pytest.raises(ValueError, match="inference only"):
        grid._case(grid.Point(_cases.Shape("lstm", 2, 10, 4, 8, mode="train"), "test"), ["bf16"])
    assert grid.frameworks_of(["torch", "onnxruntime", "tensorflow"], ["bf16"]) == ["rnnfast", "torch"]
    assert grid.frameworks_of(["tensorflow"], ["int8"]) == ["rnnfast"]
    assert grid.frameworks_of(["torch"]) == ["rnnfast", "torch"]


def test_precision_takes_the_inference_points_only(capsys):
    pts = grid.grid_points()
    sel = grid.select_points(pts, quick=True, infer_only=True)
    assert sel and {p.shape.mode for p in sel} == {"infer"}
    assert sel == [p for p in grid.select_points(pts, quick=True) if p.shape.mode == "infer"]
    grid.main(["--list", "--quick", "--precision", "bf16,int8"])
    assert capsys.readouterr().out.splitlines()[-1].startswith(f"{len(sel)} points")


@pytest.mark.parametrize("text", ["fp16", "bf16,int4", ","])
def test_bad_precision_exits(text, capsys):
    with pytest.raises(SystemExit):
        grid.main(["--list", "--precision", text])


def test_lowp_point_result_rates_each_precision_against_its_own_peers():
    point = grid.Point(_cases.Shape("gru", 2, 10, 4, 8), "test")
    rec = _record(0.010, **{"rnnfast-bf16": 0.004, "torch-bf16": 0.012, "torch-autocast": 0.020,
                            "rnnfast-int8": 0.005, "ort-int8": "skipped"})
    rec["impls"]["rnnfast-bf16"]["info"] = {"plan": "bf16 amx"}
    res = grid.point_result(point, rec, ["bf16", "int8"])
    assert res["fastest_peer"] is None and res["peers"] == {}  # the float peers were not run
    bf, i8 = res["precisions"]["bf16"], res["precisions"]["int8"]
    assert bf["fastest_peer"] == "torch-bf16" and math.isclose(bf["ratio"], 3.0)
    assert math.isclose(bf["vs_float32"], 2.5) and bf["plan"] == "bf16 amx"
    assert i8["ratio"] is None and i8["peers"] == {"ort-int8": "skipped"} and math.isclose(i8["vs_float32"], 2.0)
    rows = grid.format_lowp_rows(res)
    assert len(rows) == 2 and rows[0].startswith(point.name)
    assert " bf16 " in rows[0] and "3.00" in rows[0] and "2.50" in rows[0] and rows[0].endswith("bf16 amx")
    assert "ort-int8 -" in rows[1]
    s = grid.summary_by_precision([res], ["bf16", "int8"])
    assert s["bf16"]["n"] == 1 and s["int8"]["unrated"] == 1 and math.isclose(s["int8 vs float32"]["geomean"], 2.0)
    text = grid.format_summary(s)
    assert "bf16 vs float32" in text and "(1 unrated)" in text


def test_precision_run_on_one_tiny_point(tmp_path):
    """The whole --precision path on one tiny point, one short round: every implementation checked against
    rnnfast float32 and timed (ONNX Runtime's int8 skipped for an RNN: quantize_dynamic keeps it float32)."""
    for fw in ("torch", "onnxruntime"):
        pytest.importorskip(fw)
    out = tmp_path / "g.json"
    r = subprocess.run([sys.executable, os.path.join(BENCH, "grid.py"), "--only", "^gru-B2-T20-I1-H8-L1-uni-train",
                        "--precision", "bf16,int8", "--rounds", "1", "--min-round", "0.001", "--warmup", "1",
                        "--json", str(out), "--no-plot", "--threads", "1"], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode != 0 and "no point matches" in r.stderr  # a train point: left out
    r = subprocess.run([sys.executable, os.path.join(BENCH, "grid.py"), "--only", "^rnn-B1-T8-I1-H16",
                        "--precision", "bf16,int8", "--rounds", "1", "--min-round", "0.001", "--warmup", "1",
                        "--json", str(out), "--no-plot", "--threads", "1", "--peers", "torch,onnxruntime"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    import json
    res = json.loads(out.read_text())
    assert res["precision"] == ["bf16", "int8"] and set(res["summary"]) >= {"bf16", "int8", "bf16 vs float32"}
    (pt,) = res["points"]
    impls = pt["record"]["impls"]
    for name in ("rnnfast", "rnnfast-bf16", "torch-bf16", "torch-autocast", "rnnfast-int8"):
        assert impls[name]["status"] == "ok", (name, impls[name])
    assert impls["ort-int8"]["status"] == "skipped" and "float32" in impls["ort-int8"]["reason"]
    assert impls["rnnfast-int8"]["check"]["max"] < 5e-2
    assert pt["precisions"]["bf16"]["ratio"] > 0 and pt["precisions"]["int8"]["ratio"] is None
    assert pt["precisions"]["bf16"]["plan"].startswith("bf16 ")
    assert " bf16 " in r.stdout and "int8 vs float32" in r.stdout


def test_another_seed_draws_other_points_and_keeps_the_fixed_ones():
    pinned, other = grid.grid_points(), grid.grid_points(seed=grid.SEED + 1)
    assert other == grid.grid_points(seed=grid.SEED + 1)
    fixed = [p for p in pinned if p.tag in ("issue", "tiny")]
    assert [p for p in other if p.tag in ("issue", "tiny")] == fixed
    drawn = {p.name for p in pinned if p.tag not in ("issue", "tiny")}
    drawn_other = {p.name for p in other if p.tag not in ("issue", "tiny")}
    assert len(drawn_other) == len(drawn) and len(drawn_other & drawn) < len(drawn) // 4
    assert {p.shape.B for p in other} >= REQUIRED_BATCHES
