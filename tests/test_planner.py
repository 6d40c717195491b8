"""The kernel planner (rnnfast/_planner.py) and the optional tuning cache (rnnfast/_tune.py), without timing:
the choices follow the cost model's rules, are visible through ``plan_for``, and a tuned plan is used."""
import dataclasses
import json

import numpy as np
import pytest

import rnnfast as rf
from rnnfast import _planner, _tune
from rnnfast._planner import TABLE, Call, Cell, Machine, Plan

# the rules' outcomes asserted here are the reference machine's (tests/conftest.py): caches as measured on
pytestmark = pytest.mark.usefixtures("reference_machine")


def call(cell=Cell.LSTM, B=8, T=50, I=128, H=128, D=1, L=1, training=False, f32=True, N=None):
    return Call(cell, f32, B, T, B * T if N is None else N, I, H, D, L, training)


def test_machine_reads_cache_sizes(monkeypatch):
    monkeypatch.undo()  # this machine's caches, not the reference machine's
    m = _planner.machine()
    assert isinstance(m, Machine)
    assert 4096 <= m.l1d <= m.l2 <= max(m.l2, m.l3)


def test_cells_are_an_enum_numbered_as_the_kernels():
    from rnnfast._kernels import _recurrent as k

    assert [int(c) for c in Cell] == [k.Cell.CELL_RNN, k.Cell.CELL_LSTM, k.Cell.CELL_GRU, k.Cell.CELL_GRU_RB]
    assert [c.gates for c in Cell] == [1, 4, 3, 3]


def test_float64_and_short_calls_run_blas():
    assert _planner.plan_call(call(f32=False), 2).kernel == "blas"
    short = TABLE["packed_min_t"] - 1
    # short calls: BLAS in training, in streaming steps, and for a few (row, step, gate) products
    assert _planner.plan_call(call(T=short, training=True), 2).kernel == "blas"
    assert _planner.plan_call(call(T=1), 2, streaming=True).kernel == "blas"
    assert _planner.plan_call(call(Cell.GRU, B=4, T=1), 2).kernel == "blas"  # B T G = 12
    assert _planner.plan_call(call(Cell.RNN, B=6, T=2), 2).kernel == "blas"
    assert _planner.plan_call(call(B=2, T=2), 2).kernel == "blas"  # 16


def test_short_inference_calls_of_many_products_run_the_kernels():
    """Above short_blas_max_bgt (row, step, gate) products a short inference call packs its weights
    once and runs the packed or few-rows kernel, as a long one does (BLAS packs them at every step)."""
    short = TABLE["packed_min_t"] - 1
    for c in (call(T=short), call(Cell.GRU, B=6, T=1), call(Cell.RNN, B=17, T=1), call(B=3, T=2, D=2)):
        assert c.B * c.T * c.cell.gates > TABLE["short_blas_max_bgt"]
        assert _planner.plan_call(c, 2).kernel in ("packed", "units"), c
    # big weights and few rows: still the few-rows kernel on the rows in place (_short_in_place)
    p = _planner.plan_call(call(B=4, T=1, I=1024, H=1024), 2)
    assert (p.kernel, p.panels) == ("units", False)


def test_batch1_runs_the_latency_kernel_and_small_weights_one_thread():
    p = _planner.plan_call(call(B=1, T=100, I=256, H=512), 2)
    # (weights beyond L2: x W_ih^T from one GEMM first, W_hh alone each step)
    assert (p.kernel, p.threads, p.panels, p.proj) == ("latency", 2, True, "gemm")
    small = _planner.plan_call(call(B=1, T=10, I=8, H=16), 2)
    assert small.kernel == "latency" and small.threads == 1 and not small.panels
    # a streaming step makes x_t W_ih^T in its own pass
    assert _planner.plan_call(call(B=1, T=1, I=128, H=256), 2).proj == "step"


def test_a_few_wide_rows_share_out_units_and_many_rows_share_out_rows():
    few = _planner.plan_call(call(B=2, T=100, I=256, H=512), 2)
    assert few.kernel == "units" and few.split == "units" and few.threads == 2
    many = _planner.plan_call(call(B=256, T=20, I=64, H=64), 2)
    assert many.kernel == "packed" and many.split == "rows"
    bi = _planner.plan_call(call(B=6, T=100, I=256, H=256, D=2), 2)
    assert bi.kernel == "packed" and bi.split == "directions"
    # ... but beyond L2 a direction's weights split between two caches, read back and forth, win
    # (19.2 ms against 24.8 at H = 512)
    bi = _planner.plan_call(call(B=6, T=100, I=256, H=512, D=2), 2)
    assert bi.kernel == "units" and bi.split == "units"
    # two rows a direction have too few chains for rf_gemm_packed: the few-rows kernel, directions in turn
    # (the same weight bytes a core a step either way)
    bi = _planner.plan_call(call(B=2, T=100, I=256, H=512, D=2), 2)
    assert bi.kernel == "units" and bi.split == "units"


def test_few_rows_read_the_weight_rows_in_place_when_a_pack_would_not_pay():
    m = _planner.machine()
    H = int((m.l2 / 4) ** 0.5) // 32 * 32  # LSTM W_hh (4 H x H floats) about 4 times one core's L2
    # inference, weights beyond L2, short or middling calls: no pack (rf_gemv_nb on the rows in place)
    max_t = TABLE["units_rows_max_t" if m.few_prefetch else "units_rows_max_t_hw"]
    for B, T, threads in [(2, 10, 1), (3, max_t - 1, 1), (4, min(30, max_t - 1), 2)]:
        p = _planner.plan_call(call(B=B, T=T, I=H, H=H), threads)
        assert (p.kernel, p.panels) == ("units", False), (B, T, p)
        assert str(p).startswith("units proj=")
    # long calls pack into panels; so does training (its backward packs anyway), and more rows than few_rows
    assert _planner.plan_call(call(B=2, T=max_t, I=H, H=H), 1).panels
    assert _planner.plan_call(call(B=2, T=10, I=H, H=H, training=True), 1).panels
    wide = _planner.plan_call(call(B=TABLE["few_rows"] + 1, T=10, I=H, H=H), 2)
    assert wide.kernel != "units" or wide.panels
    # within L2 only very short calls skip the pack, and small weights always pack (scalar row tails)
    assert _planner.plan_call(call(cell=Cell.GRU, B=2, T=50, I=256, H=256), 1).panels
    assert not _planner.plan_call(call(cell=Cell.GRU, B=2, T=TABLE["units_rows_short_t"] - 1, I=256, H=256), 1).panels
    assert _planner.plan_call(call(cell=Cell.GRU, B=3, T=5, I=12, H=48), 1).kernel != "units" or \
        _planner.plan_call(call(cell=Cell.GRU, B=3, T=5, I=12, H=48), 1).panels
    # the model charges no pack to the plan that reads in place
    c = call(B=2, T=10, I=H, H=H)
    rows = _planner._cost(c, "units", "gemm", 1, m)
    packed = _planner._cost(call(B=2, T=TABLE["units_rows_max_t"], I=H, H=H), "units", "gemm", 1, m)
    assert rows < packed


@pytest.mark.parametrize("few_prefetch", [True, False])
def test_few_rows_pack_from_fewer_steps_where_the_hardware_prefetches(monkeypatch, reference_machine, few_prefetch):
    """Where the few-rows kernel does not prefetch in software (AMD), its panels stream from L3 at a
    sequential read's rate and repay their pack from units_rows_max_t_hw steps, not units_rows_max_t."""
    m = dataclasses.replace(reference_machine, few_prefetch=few_prefetch)
    monkeypatch.setattr(_planner, "machine", lambda: m)
    max_t = TABLE["units_rows_max_t" if few_prefetch else "units_rows_max_t_hw"]
    assert TABLE["units_rows_max_t_hw"] < TABLE["units_rows_max_t"]
    H = 1024  # LSTM W_hh 16 MB: a thread's share far beyond L2
    for T, panels in [(max_t - 1, False), (max_t, True), (TABLE["units_rows_max_t_hw"], not few_prefetch)]:
        p = _planner.plan_call(call(B=2, T=T, I=H, H=H), 2)
        assert (p.kernel, p.panels) == ("units", panels), (T, p)


def test_hw_rates_price_l3_reads_and_arithmetic_for_inference_only(monkeypatch, reference_machine):
    """Where the hardware streams L3 (Machine.hw_rates: AMD), inference plans cost a core's arithmetic
    and its reads beyond L2 at TABLE's _hw rates; training keeps the reference rates."""
    hw = dataclasses.replace(reference_machine, few_prefetch=False, hw_rates=True)
    assert _planner._rate("bw_l3", hw) == TABLE["bw_l3_hw"] != TABLE["bw_l3"]
    assert _planner._rate("core_flops", hw) == TABLE["core_flops_hw"]
    assert _planner._rate("bw_l2", hw) == TABLE["bw_l2"]  # (no _hw entry: the one rate)
    assert _planner._rate("bw_l3", reference_machine) == TABLE["bw_l3"]
    beyond_l2 = reference_machine.l2 * 2
    assert _planner._bandwidth(beyond_l2, hw) == TABLE["bw_l3_hw"]
    infer, train = call(B=6, T=100, I=128, H=200), call(B=6, T=100, I=128, H=200, training=True)
    plans = {}
    for m in (reference_machine, hw):
        monkeypatch.setattr(_planner, "machine", lambda m=m: m)
        assert _planner.model_machine(train).hw_rates is False
        assert _planner.model_machine(infer).hw_rates is m.hw_rates
        plans[m.hw_rates] = (_planner.plan_call(infer, 2), _planner.plan_call(train, 2))
    # rows streaming all the weights from L3 no longer lose to the threads sharing out the units
    assert (plans[False][0].kernel, plans[True][0].kernel) == ("units", "packed")
    assert plans[True][0].split == "rows"
    assert plans[False][1] == plans[True][1]



def test_hw_steps_streaming_beyond_l2_overlap_their_reads(monkeypatch, reference_machine):
    """Where the hardware streams (hw_rates), a step whose weights come from beyond L2 costs the larger of
    its arithmetic and its reads (overlap_hw); within L2, and on the reference machine, `overlap` of the
    smaller is added as before. A bidirectional few-row call then runs a direction a thread (session 27)."""
    hw = dataclasses.replace(reference_machine, few_prefetch=False, hw_rates=True)
    step_s = TABLE["step_s"]
    for m in (reference_machine, hw):
        for K, beyond in ((64, False), (4096, True)):  # (4 x 512 x K bytes: 128 KB, 8 MB)
            assert (4.0 * 512 * K > m.l2 * 3 // 4) is beyond
            work = 2.0 * 8 * 512 * K / _planner._rate("core_flops", m)
            reads = _planner._read_time(4.0 * 512 * K, m, False)
            ov = TABLE["overlap_hw"] if (beyond and m.hw_rates) else TABLE["overlap"]
            got = _planner._step_cost(8, 512, K, m)
            assert got == pytest.approx(max(work, reads) + ov * min(work, reads) + step_s)
    assert TABLE["overlap_hw"] < TABLE["overlap"]
    c = call(cell=Cell.LSTM, B=4, T=50, I=256, H=512, D=2)  # (a direction's W_hh 4 MB)
    monkeypatch.setattr(_planner, "machine", lambda: hw)
    p = _planner.plan_call(c, 2)
    assert (p.kernel, p.split) == ("packed", "directions"), p
    monkeypatch.setitem(TABLE, "overlap_hw", TABLE["overlap"])  # (the rule before: the threads share units)
    assert _planner.plan_call(c, 2).kernel == "units"

def test_machine_reports_the_kernels_prefetch_setting(monkeypatch):
    from rnnfast._kernels import _recurrent

    monkeypatch.undo()  # this machine, not the reference machine

    assert _planner._few_prefetch() == _recurrent.few_prefetch()
    assert _planner.machine().few_prefetch == _recurrent.few_prefetch()
    assert _planner.machine().hw_rates == (not _recurrent.few_prefetch())


def test_stacked_layers_plan_for_their_widest_input():
    # RNN I=1, H=512, two bidirectional layers: the second layer's input (1024) decides the product layout
    c = call(cell=Cell.RNN, B=8, T=100, I=1, H=512, D=2, L=2)
    assert _planner._widest(c) == 1024
    assert _planner.plan_call(c, 1).proj == "gemm"
    assert _planner._widest(call(I=300, H=100, D=1, L=2)) == 300
    assert _planner._widest(call(I=1, H=512, L=1)) == 1


def test_bidirectional_few_rows_share_out_units_when_a_direction_outgrows_l2():
    # W_hh of H = 384 (2.4 MB) beyond one core's L2 (2 MB here; the rule reads the machine's): the threads share
    # out the units of one direction after the other, each streaming half of it from its own L2
    m = _planner.machine()
    H = int((1.5 * m.l2 * 3 / 4 / 16) ** 0.5)  # LSTM W_hh (4 H x H floats) 1.5 times what the rule keeps in L2
    c = call(B=2, T=64, I=2 * H, H=H, D=2, L=2)
    p = _planner.plan_call(c, 2)
    assert (p.kernel, p.proj, p.split, p.threads) == ("units", "gemm", "units", 2)
    # the cost of the directions in turn is twice one direction's (but for the shared parallel regions)
    one = _planner._cost(call(B=2, T=64, I=2 * H, H=H), "units", "gemm", 2, m)
    two = _planner._cost(c, "units", "gemm", 2, m)
    assert 1.9 * one < two < 2.1 * one


def test_a_product_with_too_few_fma_chains_costs_a_full_block():
    # rf_gemm_packed runs two chains a row of an 8-row block, the few-rows product four: below fma_chains a
    # block costs as much as one with just enough rows
    chains = TABLE["fma_chains"]
    assert _planner._chain_rows(2, "packed") == _planner._chain_rows(chains // 2, "packed") == chains // 2
    assert _planner._chain_rows(2, "units") == 2
    # (one row: the few-rows kernel's per-step costs outweigh its chains; it costs as rf_gemm_packed's)
    assert _planner._chain_rows(1, "units") == _planner._chain_rows(1, "packed")
    assert _planner._chain_rows(9, "packed") == 8 + chains // 2
    assert _planner._chain_rows(1, "latency") == 1  # the batch-1 kernel's own GEMV
    m = Machine(l1d=1 << 30, l2=1 << 31, l3=1 << 32)  # weights in L1: the step is its arithmetic
    assert _planner._step_cost(2, 512, 512, m) == pytest.approx(_planner._step_cost(chains // 2, 512, 512, m))
    assert _planner._step_cost(2, 512, 512, m, "units") < _planner._step_cost(2, 512, 512, m)


@pytest.mark.parametrize("B", [2, 3])
def test_one_thread_two_or_three_rows_take_the_few_rows_product(B):
    for cell, I, H in [(Cell.GRU, 256, 256), (Cell.LSTM, 64, 64), (Cell.LSTM, 768, 384)]:
        p = _planner.plan_call(call(cell, B=B, T=50, I=I, H=H), 1)
        assert (p.kernel, p.split, p.threads) == ("units", "none", 1)
    # a bidirectional stack too: the directions one after the other
    p = _planner.plan_call(call(B=B, T=64, I=768, H=384, D=2, L=2), 1)
    assert (p.kernel, p.threads) == ("units", 1)


@pytest.mark.parametrize("H, kernel", [(16, "packed"), (40, "packed"), (48, "packed"), (32, "units"),
                                         (64, "units"), (128, "units")])
def test_one_thread_few_rows_pay_for_whole_panels(H, kernel):
    """The few-rows kernel computes every gate's share of units in whole 32-column panels: at H = 16, 40, 48
    (gates padded to 32, 64, 64 units) the packed kernel, whose G H columns pad once, is cheaper on one
    thread (measured 1.15-1.35x at B = 2-3); at multiples of 32 the few-rows kernel keeps them."""
    assert _planner.plan_call(call(Cell.LSTM, B=3, T=200, I=48, H=H), 1).kernel == kernel


def test_units_share_counts_whole_panels():
    assert _planner._units_share(48, 1, "units", True) == 64
    assert _planner._units_share(48, 1, "units", False) == 48      # rows in place: no panels
    assert _planner._units_share(48, 1, "latency", True) == 48     # the batch-1 kernel's own layout
    assert _planner._units_share(100, 2, "units", False) == 64     # rf_units_share: whole panels a thread
    assert _planner._units_share(40, 2, "units", False) == 20      # too few units for whole panels
    assert _planner._units_share(100, 2, "units", True, training=True) == 50  # (see its docstring)
    assert _planner._units_share(48, 1, "units", True, training=True) == 64


def test_the_packed_kernel_and_the_projection_pay_for_whole_panels():
    m = Machine(l1d=48 * 1024, l2=2 << 20, l3=32 << 20)
    cost = {H: _planner._proj_cost(call(Cell.GRU, B=8, T=50, I=64, H=H), 64, 1, m) for H in (32, 33, 40)}
    # GRU: 96 gate columns at H=32; 99 and 120 both run as 128
    assert cost[33] == pytest.approx(cost[40], rel=0.02) and cost[32] < 0.8 * cost[33]
    step = {H: _planner._cost(call(Cell.GRU, B=8, T=50, I=64, H=H), "packed", "step", 1, m) for H in (32, 33, 40)}
    assert step[33] > 1.2 * step[32] and step[40] < 1.1 * step[33]


def test_one_thread_one_row_or_enough_rows_keep_the_packed_kernel():
    # one row (bidirectional): the few-rows kernel's per-step costs outweigh the chains; from fma_chains / 2
    # rows on, rf_gemm_packed has chains enough
    assert _planner.plan_call(call(B=1, T=1000, I=24, H=48, D=2, L=2), 1).kernel == "packed"
    # and on two threads a bidirectional row whose direction fits L2 keeps a direction a thread (no barriers)
    p = _planner.plan_call(call(B=1, T=100, I=128, H=256, D=2), 2)
    assert (p.kernel, p.split) == ("packed", "directions")
    for B in (TABLE["fma_chains"] // 2, 6, 8):
        assert _planner.plan_call(call(Cell.GRU, B=B, T=50, I=256, H=256), 1).kernel == "packed"


def test_wide_input_hoists_the_input_product():
    # W_ih (1024 x 512 floats) beyond L2: one GEMM over all steps, then W_hh alone each step
    assert _planner.plan_call(call(B=8, T=50, I=1024, H=128), 2).proj == "gemm"


def test_weights_within_l2_hoist_only_when_the_steps_rows_are_too_few_for_their_chains():
    m = _planner.machine()
    # one row a direction: the fused step's product waits on its chains, the GEMM over all steps does not
    tiny_bi = call(B=1, T=1000, I=24, H=48, D=2, L=2)
    assert 4 * 4 * 48 * (24 + 48) <= m.l2 // 2  # (the weights well within half of L2)
    for threads in (1, 2):
        p = _planner.plan_call(tiny_bi, threads)
        assert (p.kernel, p.proj) == ("packed", "gemm")
    # rows enough for the chains: the step stays fused (one pass over the gates fewer)
    for B in (8, 16):
        assert _planner.plan_call(call(Cell.GRU, B=B, T=200, I=256, H=64), 1).proj == "step"


@pytest.mark.parametrize("cell", list(Cell))
def test_a_batch1_call_of_one_or_two_steps_keeps_the_input_product_in_its_steps(cell):
    # weights far beyond L2, where a long call hoists: one or two steps (a streaming step) would pay for
    # packing W_ih^T at every call
    for threads in (1, 2):
        for T in (1, 2):
            p = _planner.plan_call(call(cell, B=1, T=T, I=1024, H=1024), threads)
            assert (p.kernel, p.proj) == ("latency", "step")
        assert _planner.plan_call(call(cell, B=1, T=3, I=1024, H=1024), threads).proj == "gemm"
        # the valid steps count, not the padded length
        assert _planner.plan_call(call(cell, B=1, T=40, N=2, I=1024, H=1024), threads).proj == "step"


def test_short_inference_on_big_weights_reads_the_rows_in_place_not_blas():
    big = dict(I=256, H=256)  # LSTM: 2 MB of weights, which BLAS would pack at every call
    for threads in (1, 2):
        for B, T, D in [(2, 1, 1), (5, 3, 1), (32, 2, 1), (1, 2, 2)]:
            c = call(B=B, T=T, D=D, **big)
            p = _planner.plan_call(c, threads)
            assert (p.kernel, p.proj, p.panels) == ("units", "step", False), (B, T, D, threads)
            assert [q.kernel for q in _planner.candidates(c, threads)] == ["units", "blas"]  # (rf.tune's)
        # not: more rows than short_rows_max or small weights (then the packed kernel, the short-call rule:
        # _short_blas), training, float64, or enough steps to pack for
        assert _planner.plan_call(call(B=33, T=1, **big), threads).kernel == "packed"
        assert _planner.plan_call(call(B=5, T=1, I=128, H=128), threads).kernel in ("packed", "units")
        assert _planner.plan_call(call(B=4, T=1, training=True, **big), threads).kernel == "blas"
        assert _planner.plan_call(call(B=4, T=1, f32=False, **big), threads).kernel == "blas"
        assert "blas" not in [q.kernel for q in _planner.candidates(call(B=4, T=4, **big), threads)]


def test_a_short_batch1_call_whose_weights_stay_in_l2_keeps_the_input_product_in_its_steps():
    m = _planner.machine()
    # I = H with a thread's share of [W_ih, W_hh] past half of L2 (where longer calls hoist) but within 3/4
    H = next(h for h in range(32, 4096, 32) if m.l2 // 2 < 4 * 4 * (h // 2) * 2 * h <= m.l2 * 3 // 4)
    for T in (3, 8, TABLE["latency_hoist_l2_min_t"] - 1):
        assert _planner.plan_call(call(B=1, T=T, I=H, H=H), 2).proj == "step", T
    assert _planner.plan_call(call(B=1, T=TABLE["latency_hoist_l2_min_t"], I=H, H=H), 2).proj == "gemm"
    # beyond L2 the product leaves the steps from latency_hoist_min_t steps on
    assert _planner.plan_call(call(B=1, T=TABLE["latency_hoist_min_t"], I=4 * H, H=2 * H), 2).proj == "gemm"


def test_streaming_steps_of_wide_layers_match_the_whole_sequence():
    # (the step path these layers now take: the batch-1 kernel with x_t W_ih^T in the step)
    for cls in (rf.nn.LSTM, rf.nn.GRU, rf.nn.RNN):
        layer = cls(128, 256, seed=0).eval()
        assert _planner.plan_call(layer._call(1, 1, 1, False), 2).proj == "step"
        x = np.random.default_rng(1).standard_normal((1, 5, 128)).astype(np.float32)
        want = layer(x, n_threads=2)[0]
        state = None
        for t in range(5):
            y, state = layer.step(x[:, t], state, n_threads=2)
            np.testing.assert_allclose(y, want[:, t], rtol=1e-5, atol=1e-6)


def test_tiny_calls_stay_on_one_thread():
    p = _planner.plan_call(call(B=16, T=8, I=1, H=8), 2)
    assert p.threads == 1 and p.split == "none"


def test_candidates_start_with_the_plan_and_cover_both_layouts():
    c = call(B=3, T=40, I=200, H=200)
    cands = list(_planner.candidates(c, 2))
    assert cands[0] == _planner.plan_call(c, 2)
    assert {(p.kernel, p.proj) for p in cands} == {("packed", "step"), ("packed", "gemm"), ("units", "step"),
                                                  ("units", "gemm")}



def test_candidates_offer_the_weight_rows_in_place_beyond_few_rows_in_inference_only():
    """rf.tune may time the few-rows kernel on its weight rows in place at more than few_rows rows in
    inference (the planner's own choice there packs); training keeps the packed layout."""
    B = TABLE["few_rows"] + 2
    infer = [p for p in _planner.candidates(call(B=B, T=8, I=256, H=512), 2) if p.kernel == "units"]
    assert {p.panels for p in infer} == {True, False}
    assert _planner.plan_call(call(B=B, T=8, I=256, H=512), 2).panels
    train = [p for p in _planner.candidates(call(B=B, T=8, I=256, H=512, training=True), 2) if p.kernel == "units"]
    assert train and all(p.panels for p in train)

def test_the_table_drives_the_rules(monkeypatch):
    c = call(B=1, T=10, I=8, H=16)
    monkeypatch.setitem(TABLE, "latency_min_split_bytes", 0)
    assert _planner.plan_call(c, 2).threads == 2
    monkeypatch.setitem(TABLE, "units_max_rows", 1)
    assert _planner.plan_call(call(B=2, T=100, I=256, H=512), 2).kernel == "packed"


def test_plan_for_shows_the_layers_choice_and_follows_its_mode():
    m = rf.nn.LSTM(256, 512, seed=0)
    x = np.zeros((2, 100, 256), np.float32)
    p = m.plan_for(x, n_threads=2)
    assert isinstance(p, Plan) and "units" in str(p)
    assert m.plan_for(x, n_threads=2, training=False) == m.eval().plan_for(x, n_threads=2)
    assert rf.nn.LSTM(4, 4, dtype=np.float64).plan_for(np.zeros((3, 5, 4))).kernel == "blas"
    with pytest.raises(ValueError):
        m.plan_for(np.zeros((2, 100, 3), np.float32))


def test_thread_policy_clock_is_injectable():
    now = [10.0]
    pol = _planner.ThreadPolicy(clock=lambda: now[0], perf=lambda: now[0])
    pol.note(2, 3)
    pol.note(2, 3)
    assert pol.threads(2) == 1
    now[0] += 1.0
    assert pol.threads(2) == 2
    # a cold step runs on one thread, whatever was planned
    assert pol.step_threads(2) == (1, False, False)


class Machine2:
    """A fake clock and batch-1 calls through a ThreadPolicy: ``run(took, busy)`` asks for two threads,
    lets ``took`` seconds pass (``one`` on one thread) and notes the call; returns the threads used."""

    def __init__(self, one=6e-3):
        self.now, self.one = 100.0, one
        self.pol = _planner.ThreadPolicy(clock=lambda: self.now, perf=lambda: self.now)

    def run(self, took, busy=False, gap=0.001):
        n = self.pol.threads(2)
        self.now += self.one if n == 1 else took
        self.pol.note(n, int(busy and n > 1))
        self.now += gap
        return n


def test_backoff_a_transient_leaves_no_serial_mode():
    """One busy call among clean ones (a peer's threads spinning down, a partner slow to wake) never sends
    the layer to one thread; nor do a few busy long calls whose wait costs less than one thread would."""
    m = Machine2()
    for _ in range(5):
        assert m.run(3e-3) == 2
    assert m.run(4e-3, busy=True) == 2
    assert [m.run(3e-3) for _ in range(10)] == [2] * 10
    # two busy calls of eight, each 5 ms late (2 ms slower than one thread): one thread would lose 3 ms on
    # each of the six others
    assert [m.run(8e-3 if k % 4 == 0 else 3e-3, busy=k % 4 == 0) for k in range(8)] == [2] * 8
    assert m.pol.stats["backoffs"] == 0 and m.pol.stats["serial"] == 0
    assert m.pol.stats["busy"] == 3 and m.pol.stats["calls"] == 24
    # busy calls no slower than one thread never pay for a back-off, however many
    assert [m.run(5e-3, busy=True) for k in range(8)] == [2] * 8
    assert m.pol.stats["backoffs"] == 0


def test_backoff_weighs_the_share_of_busy_calls():
    """The same late calls (8 ms against 3 ms clean, 6 ms on one thread) as most of the last eight: one
    thread loses less, and the layer backs off."""
    m = Machine2()
    for _ in range(8):
        m.run(3e-3)
    runs = [m.run(8e-3 if k % 4 else 3e-3, busy=k % 4 > 0) for k in range(8)]
    assert runs[:4] == [2] * 4 and 1 in runs  # (from four busy of eight: 0.5 * 2 ms > 0.5 * 3 ms is not)
    assert m.pol.stats["backoffs"] >= 1


def test_backoff_when_busy_calls_are_the_rule_and_it_grows():
    """Busy calls as the rule (another process holds a core): after the second the layer runs on one
    thread for backoff_min_s; each probe at the end of a back-off that finds the cores busy again doubles
    it, up to backoff_max_s."""
    lo, hi = TABLE["backoff_min_s"], TABLE["backoff_max_s"]
    m = Machine2()
    assert m.run(3e-3, busy=True) == 2
    assert m.pol.serial_until == 0.0  # one busy call is no evidence yet
    assert m.run(3e-3, busy=True) == 2
    assert m.pol.serial_until == pytest.approx(m.now - 1e-3 + lo)
    assert m.run(3e-3) == 1
    waits = []
    for _ in range(12):  # each back-off over, the probe finds the trouble there again
        m.now = m.pol.serial_until
        assert m.run(3e-3, busy=True) == 2
        waits.append(m.pol.backoff)
    assert waits[0] == pytest.approx(2 * lo) and waits[-1] == hi
    st = m.pol.stats
    assert st["probes"] == 12 and st["backoffs"] == 13 and st["recoveries"] == 0 and st["serial"] == 1


def test_backoff_short_busy_calls_weigh_more():
    """Short calls: a wait of 2 ms against a call of 50 us, two busy calls of eight send the layer to one
    thread (the same share that left long calls alone)."""
    m = Machine2()
    for k in range(8):
        m.run(5e-5, busy=False)
    m.run(2e-3, busy=True)
    assert m.pol.serial_until == 0.0
    m.run(2e-3, busy=True)
    assert m.pol.serial_until > m.now and m.run(5e-5) == 1


def test_backoff_recovers_at_a_clean_probe():
    """The first call after a back-off is a probe on two threads: busy, the back-off doubles; clean (the
    other program has gone), the back-off ends at once and its length is the shortest again; the calls after
    it run on two threads."""
    m = Machine2()
    for _ in range(3):
        m.run(3e-3)
    n = 0
    while not m.pol.stats["backoffs"]:  # another program takes a core: busy calls, 8 ms against 6 on one thread
        m.run(8e-3, busy=True)
        n += 1
    assert n == 5  # (5 of 8: 5/8 * 2 ms > 3/8 * 3 ms; at 4, 1 ms is not more than 1.5)
    assert m.run(3e-3) == 1
    m.now = m.pol.serial_until
    assert m.run(8e-3, busy=True) == 2  # the probe: still busy, twice as long
    assert m.pol.backoff == pytest.approx(2 * TABLE["backoff_min_s"])
    m.now = m.pol.serial_until
    assert m.run(3e-3) == 2  # the probe: clean
    assert m.pol.stats["recoveries"] == 1 and m.pol.backoff == TABLE["backoff_min_s"]
    assert [m.run(3e-3) for _ in range(20)] == [2] * 20
    assert m.pol.stats["serial"] == 1
    m.pol.note(1, 5)  # one thread has no barrier to wait at
    assert m.pol.stats["busy"] == 6


def test_backoff_counts_calls_not_yet_made_as_clean():
    """Two busy calls of a layer's first two are evidence enough while nothing is known of clean calls; once
    clean calls are known, two busy calls of two are not a rule: the share counts the whole window."""
    m = Machine2()
    m.run(8e-3, busy=True)
    m.run(8e-3, busy=True)
    assert m.pol.stats["backoffs"] == 1
    m = Machine2()
    m.pol.call_s = [6e-3, 3e-3, 8e-3]  # (known from earlier calls)
    m.run(8e-3, busy=True)
    m.run(8e-3, busy=True)
    assert m.pol.stats["backoffs"] == 0 and m.pol.recent == [True, True]


def test_backoff_reads_its_table(monkeypatch):
    monkeypatch.setitem(TABLE, "backoff_evidence", 1)
    m = Machine2()
    m.run(3e-3, busy=True)
    assert m.run(3e-3) == 1


def test_tune_picks_a_candidate_caches_it_and_the_layer_uses_it(tmp_path, monkeypatch):
    monkeypatch.setenv("RNNFAST_CACHE_DIR", str(tmp_path))
    m = rf.nn.GRU(12, 40, seed=1).eval()
    x = np.random.default_rng(0).standard_normal((3, 9, 12)).astype(np.float32)
    before = m(x, n_threads=2)[0]
    res = rf.tune(m, x, n_threads=2, repeats=1)
    assert res["plan"] in list(_tune._candidates(m._call(3, 9, 27, False), 2))
    assert set(res["times"]) >= {str(res["default"]), str(res["plan"])}
    assert m.plan_for(x, n_threads=2).tuned
    np.testing.assert_allclose(m(x, n_threads=2)[0], before, rtol=1e-5, atol=1e-6)
    data = json.loads((tmp_path / "plans.json").read_text())
    (mine,) = data.values()
    assert m._call(3, 9, 27, False).key(2) in mine
    # another layer of a process started with RNNFAST_TUNE=1 reads the file
    monkeypatch.setenv("RNNFAST_TUNE", "1")
    monkeypatch.setattr(_tune, "_loaded", None)
    monkeypatch.setattr(_tune, "_enabled", None)
    other = rf.nn.GRU(12, 40, seed=2).eval()
    assert other.plan_for(x, n_threads=2).tuned
    monkeypatch.setattr(_tune, "_loaded", None)


def test_a_damaged_tuning_cache_is_ignored(tmp_path, monkeypatch):
    monkeypatch.setenv("RNNFAST_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("RNNFAST_TUNE", "1")
    monkeypatch.setattr(_tune, "_loaded", None)
    monkeypatch.setattr(_tune, "_enabled", None)
    (tmp_path / "plans.json").write_text('{"' + _tune._machine_key() + '": {"x": {"kernel": "evil"}}}')
    m = rf.nn.LSTM(4, 8)
    assert not m.plan_for(np.zeros((2, 5, 4), np.float32)).tuned
    (tmp_path / "plans.json").write_text("not json")
    monkeypatch.setattr(_tune, "_loaded", None)
    assert not m.plan_for(np.zeros((2, 5, 4), np.float32)).tuned
    monkeypatch.setattr(_tune, "_loaded", None)


def test_tune_rejects_bad_repeats():
    with pytest.raises(ValueError):
        rf.tune(rf.nn.LSTM(2, 3), np.zeros((1, 4, 2), np.float32), repeats=0)


def test_tune_keeps_the_default_unless_a_candidate_wins_beyond_the_noise():
    default, other = Plan("units", "gemm", "units", 2), Plan("packed", "gemm", "none", 1)
    # faster by 10% in every round: the candidate
    assert _tune._pick({default: [1.0, 1.1, 1.0], other: [0.9, 0.99, 0.9]}, default) == other
    # a lower median by less than the margin: the default
    within = 1.0 - _tune.MARGIN / 2
    assert _tune._pick({default: [1.0, 1.0, 1.0], other: [within] * 3}, default) == default
    # a lower median but a slower fastest round (one quick default round; the others disturbed): the default
    assert _tune._pick({default: [0.8, 1.2, 1.2], other: [0.85, 0.9, 0.9]}, default) == default
    # the default faster: the default
    assert _tune._pick({default: [1.0] * 3, other: [2.0] * 3}, default) == default


@pytest.mark.parametrize("B,T,I,H,panels", [
    (2, 20, 1024, 1024, True),   # enough steps: kept panels stream faster than rows, whatever the size
    (3, 60, 512, 768, True),
    (2, 16, 256, 512, True),
    (2, 8, 512, 1024, False),    # fewer steps: the check's read costs what panels gain (as packing each call)
    (3, 5, 1024, 1024, False),
])
def test_kept_packs_turn_the_few_rows_kernel_to_panels(B, T, I, H, panels):
    """With the packs kept (Call.kept) a call does not pack: the few-rows kernel takes panels from
    units_kept_panels_min_t steps on; below, and packing at every call, it keeps the rows in place where the
    weights are beyond L2."""
    kept = dataclasses.replace(call(B=B, T=T, I=I, H=H), kept=True)
    plan = _planner.plan_call(kept, 2)
    assert plan.kernel == "units" and plan.panels is panels, str(plan)
    unkept = _planner.plan_call(call(B=B, T=T, I=I, H=H), 2)
    if T < TABLE["units_kept_panels_min_t"]:  # (shorter calls: the same rule either way)
        assert unkept == plan, str(unkept)
    if (B, T, H) == (3, 60, 768):  # (a share beyond L2: rows in place when packing at every call)
        assert unkept.kernel == "units" and not unkept.panels, str(unkept)


def test_layers_describe_kept_packs(monkeypatch):
    from rnnfast.nn import _packs

    lay = rf.nn.LSTM(64, 96).eval()
    x = np.ones((2, 5, 64), np.float32)
    assert lay._describe(x, None, False).kept
    assert not lay._describe(x, None, True).kept
    assert not rf.nn.LSTM(64, 96, dtype=np.float64)._describe(x.astype(np.float64), None, False).kept
    small = rf.nn.LSTM(8, 16).eval()  # (below KEEP_MIN_BYTES: packs at every call)
    assert not small._describe(x[..., :8], None, False).kept
    assert rf.nn.freeze(small)._describe(x[..., :8], None, False).kept
    monkeypatch.setattr(_packs, "KEEP_PACKS", False)
    assert not lay._describe(x, None, False).kept
    assert rf.nn.freeze(lay)._describe(x, None, False).kept


def test_streaming_steps_plan_as_packing_at_every_call(monkeypatch):
    """layer.step's kernel arguments pack at every step (no kept packs): its plan is asked as such."""
    seen = []
    real = _planner.plan_call

    def spy(c, threads, *a, **k):
        seen.append((c, k.get("streaming", a[1] if len(a) > 1 else False)))
        return real(c, threads, *a, **k)

    monkeypatch.setattr(_planner, "plan_call", spy)
    lay = rf.nn.LSTM(256, 256).eval()
    lay.step(np.ones((8, 256), np.float32))
    steps = [c for c, streaming in seen if streaming]
    assert steps and not any(c.kept for c in steps)
    assert real(steps[0], 2, streaming=True) == Plan("units", "step", "units", 2, False)  # (2 MB: rows in place)


def test_tune_times_each_plans_steady_state_on_its_kept_packs(tmp_path, monkeypatch):
    """rf.tune runs each candidate CALLS times in a row a round, timing all but the first, with room for
    every candidate's kept packs (none pushes another's out); afterwards the layer keeps no more than usual."""
    from rnnfast.nn import _packs

    monkeypatch.setenv("RNNFAST_CACHE_DIR", str(tmp_path))
    m = rf.nn.LSTM(64, 96, seed=1).eval()
    x = np.random.default_rng(0).standard_normal((3, 9, 64)).astype(np.float32)
    calls, room = [], []
    real = _tune._time_once

    def spy(layer, *a):
        calls.append(layer._forced_plan)
        room.append(getattr(layer, "_packs_most", None))
        return real(layer, *a)

    monkeypatch.setattr(_tune, "_time_once", spy)
    res = rf.tune(m, x, n_threads=2, repeats=2, save=False)
    n = len(res["times"])
    assert len(calls) == n * 3 * _tune.CALLS
    groups = [calls[i:i + _tune.CALLS] for i in range(0, len(calls), _tune.CALLS)]
    assert all(len(set(map(str, g))) == 1 for g in groups)  # (a plan's calls in a row)
    assert all(r is not None and r >= n for r in room)
    assert len(m._packs) <= _packs._MOST and not hasattr(m, "_packs_most")


def test_hw_multiply_add_chains(monkeypatch, reference_machine):
    """Where the hardware streams (hw_rates: Zen 4, one 512-bit multiply-add a cycle), fma_chains_hw chains
    keep a core busy: rf_gemm_packed's two or three rows cost as many, not a block of fma_chains / 2. The
    reference machine keeps fma_chains; so does training (model_machine)."""
    hw = dataclasses.replace(reference_machine, few_prefetch=False, hw_rates=True)
    assert TABLE["fma_chains_hw"] < TABLE["fma_chains"]
    assert [_planner._chain_rows(r, "packed", hw) for r in (1, 2, 3, 9)] == [2, 2, 3, 10]
    assert [_planner._chain_rows(r, "packed", reference_machine) for r in (2, 3)] == [4, 4]
    assert _planner._chain_rows(2, "units", hw) == 2
    c = call(Cell.RNN, B=6, T=128, I=384, H=96)  # (three rows a task on two threads)
    plans = {}
    for m in (reference_machine, hw):
        monkeypatch.setattr(_planner, "machine", lambda m=m: m)
        plans[m.hw_rates] = _planner.plan_call(c, 2)
        assert _planner.model_machine(dataclasses.replace(c, training=True)).hw_rates is False
    # three rows no longer look short of chains, so the input product stays in the steps (1.72x, session 28)
    assert (plans[True].kernel, plans[True].split, plans[True].proj) == ("packed", "rows", "step")
    assert plans[False].proj == "gemm"


def test_hw_hoists_only_reads_that_outlast_the_arithmetic(monkeypatch, reference_machine):
    """Where the hardware streams (hw_rates), a step's reads beyond L2 overlap its arithmetic fully, so the
    input product leaves the steps only when those reads outlast the arithmetic (hoist_reads_share_hw), not
    at a third of it; but directions on threads of their own whose two sets of weights overflow half of L3
    stream from memory and still hoist, and the few-rows kernel reading the rows in place keeps the
    reference share (session 28)."""
    hw = dataclasses.replace(reference_machine, few_prefetch=False, hw_rates=True)
    assert TABLE["hoist_reads_share"] < TABLE["hoist_reads_share_hw"]
    wide = call(B=8, T=50, I=1024, H=128)  # (rows: 4 a task, [W_ih, W_hh] 4.5 MB)
    assert _planner._hoists(wide, "packed", 2, reference_machine)
    assert not _planner._hoists(wide, "packed", 2, hw)
    # two directions of 11.8 MB each on a thread each: beyond half of L3 together
    bi = call(B=3, T=64, I=1536, H=384, D=2)
    assert _planner._hoists(bi, "packed", 2, hw)
    one = dataclasses.replace(bi, D=1)  # (one direction alone: from L3)
    assert not _planner._hoists(one, "packed", 2, hw)
    # the few-rows kernel on rows in place (a short call): the reference share
    short = call(B=3, T=6, I=256, H=384)
    assert not _planner._panels(short, "units", 2, "step", hw)
    assert _planner._hoists(short, "units", 2, hw) and _planner._hoists(short, "units", 2, reference_machine)
    monkeypatch.setitem(TABLE, "hoist_reads_share", TABLE["hoist_reads_share_hw"])  # (what it keeps it from)
    assert not _planner._hoists(short, "units", 2, hw)


def test_small_call_rule():
    """A call below min_parallel_flops runs on one thread; the thread policy may send it to several when
    the plan with them awake gives them tasks of their own (rows or directions, not the few-rows kernel's
    shares) of small_min_t steps or more."""
    t = TABLE["small_min_t"]
    bi = call(Cell.GRU, B=12, T=t, I=2, H=8, D=2)
    assert _planner.small_call(bi, 2) and not _planner.small_call(bi, 1)
    assert _planner.plan_call(bi, 2).threads == 1
    awake = _planner.plan_call(bi, 2, awake=True)
    assert (awake.kernel, awake.split, awake.threads) == ("packed", "directions", 2)
    assert _planner.small_call(bi, 2, awake)
    short = dataclasses.replace(bi, T=t // 2, N=bi.B * (t // 2))
    assert not _planner.small_call(short, 2, _planner.plan_call(short, 2, awake=True))
    assert not _planner.small_call(bi, 2, dataclasses.replace(awake, kernel="units", split="units"))
    assert not _planner.small_call(bi, 2, dataclasses.replace(awake, threads=1))
    assert not _planner.small_call(call(B=1, T=t, I=2, H=8), 2)  # (batch 1: the batch-1 kernel's rule)
    big = call(Cell.GRU, B=64, T=100, I=64, H=128, D=2)
    assert not _planner.small_call(big, 2) and _planner.plan_call(big, 2, awake=True) == _planner.plan_call(big, 2)


def test_small_calls_take_several_threads_only_while_awake_and_faster():
    now = [5.0]
    pol = _planner.ThreadPolicy(clock=lambda: now[0], perf=lambda: now[0])
    key, explore = ("small", 12, 16, 2), TABLE["step_explore"]
    assert pol.small_threads(key, 2) == (1, False, False)  # cold: the first call of a loop
    pol.small_done(key, False, False, 3e-5)
    assert not pol.small  # (a cold call is not timed)
    now[0] += TABLE["small_warm_s"] / 2
    ways = []
    for _ in range(60):  # warm, and several threads three times faster
        nth, split, warm = pol.small_threads(key, 2)
        assert warm and nth == (2 if split else 1)
        pol.small_done(key, split, warm, 1e-5 if split else 3e-5)
        ways.append(split)
    assert not ways[0] and all(ways[explore:])  # (one thread first, until its time is known)
    for _ in range(60):  # several become slower: back to one, but for the exploring calls
        nth, split, warm = pol.small_threads(key, 2)
        pol.small_done(key, split, warm, 9e-5 if split else 3e-5)
        ways.append(split)
    assert not any(ways[-20:])
    assert pol.small_threads(key, 1) == (1, False, False)
    now[0] += 2 * TABLE["small_warm_s"]  # a pause: the workers are asleep
    assert pol.small_threads(key, 2) == (1, False, False)
    assert pol.small_threads(("small", 1, 16, 2), 2)[0] == 1 and len(pol.small) == 1  # (cold: no entry made)
