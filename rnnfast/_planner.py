"""The one place that decides how a recurrent layer's call runs.

From the call's shape (a :class:`Call`), the thread count and the machine's cache sizes (read at run
time, :func:`machine`), :func:`plan_call` picks a :class:`Plan`:

``kernel``
    ``"latency"``: one sequence; the threads share out the hidden units (csrc/rf_latency.h).
    ``"units"``: a few rows; the threads share out the hidden units, each streaming its share of the
    weights once a step for every row (csrc/rf_units.h), the directions one after the other (a thread's
    share of one direction's weights fits L2 where a whole direction on one thread may not). On one thread
    it runs 2-3 rows, too few for the packed kernel's multiply-add chains (TABLE's fma_chains).
    ``"packed"``: tasks of (direction, block of rows), each with its own per-step product on weights
    packed once per call (csrc/rf_gemm.h).
    ``"blas"``: the same tasks with BLAS's GEMM per step (float64, or too few steps to pay for packing on
    small weights; on big ones such a call reads the weight rows in place on the few-rows kernel).
``proj``
    ``"step"``: x_t W_ih^T is part of each step's product (no (N, G*H) array through memory);
    ``"gemm"``: one GEMM over all steps first, and a step reads W_hh alone.
``split`` / ``threads``
    How the threads share the work (``"units"``, ``"rows"``, ``"directions"``, ``"rows+directions"``,
    ``"none"``) and how many run.
``panels`` (printed ``+panels``)
    Whether the batch-1 or few-rows kernel packs its weights into panels before the first step, or reads
    the weight rows in place (short calls, and a few rows of weights beyond L2 in inference: ``_panels``).

The kernel is chosen by a small roofline model: a step costs the larger of its multiply-adds at the
core's rate and its weight bytes at the bandwidth of the cache level they fit in (plus part of the
smaller), and the fixed costs of a step, a barrier and a parallel region; the product layout by one
rule (``_hoists``: the input product leaves the steps when their weights stream from beyond half of
L2 and those reads matter), both for the call's widest layer (``_widest``). Every number is in :data:`TABLE`, each with the measurement behind it. The batch-1 back-off and the streaming-step choice, which depend on the machine's recent
behaviour rather than the shape, are :class:`ThreadPolicy`, with an injectable clock.

``rnnfast.tune`` (:mod:`rnnfast._tune`) can time the candidates (:func:`candidates`) on the user's
machine and remember the fastest per shape; :func:`plan_call` then returns that plan.
"""
from __future__ import annotations

import enum
import functools
import os
import time
from dataclasses import dataclass, replace
from typing import Callable, Iterator, Optional

__all__ = ["Cell", "KERNELS", "Call", "Plan", "Machine", "machine", "model_machine", "plan_call", "small_call",
           "candidates", "ThreadPolicy", "Ways", "TABLE"]


class Cell(enum.IntEnum):
    """The cell kinds, numbered as the kernels number them (``_recurrent.Cell``)."""

    RNN = 0
    LSTM = 1
    GRU = 2
    #: GRU "reset before" (Keras ``reset_after=False``, ONNX ``linear_before_reset=0``): the n gate's
    #: recurrent product is over r * h, so a step makes its recurrent product in two parts (r, z rows, then
    #: n rows) with a cell pass after each. Every kernel runs it; the cost model treats it as GRU (the same
    #: multiply-adds and weight bytes a step) but for the unit-sharing kernels' second barrier a step.
    GRU_RB = 3

    @property
    def gates(self) -> int:
        """G: gates per hidden unit."""
        return (1, 4, 3, 3)[self.value]

    @property
    def barriers(self) -> int:
        """Barriers a step of the unit-sharing kernels (latency, units) takes: reset before waits for all of
        r * h before the n gate's product."""
        return 2 if self is Cell.GRU_RB else 1


# Every threshold and rate of the planner, with what it models (measured on the project's 2-vCPU
# Xeon with AVX-512, 2 MB of L2 a core, unless said otherwise).
TABLE = {
    # --- batch 1 (csrc/rf_latency.h) ---
    # [W_ih, W_hh] bytes below which it runs on one thread: a step's barrier costs more than half the
    # product (a step call at I = H = 64: 5.3 us on one thread, 5.9 on two; at 128: 8.9 and 8.1)
    "latency_min_split_bytes": 256 * 1024,
    # from this many steps on the weights are packed into panels first (6.4 us a step against 7.6 at
    # T=100, H=256, two threads); packing costs what three steps gain
    "latency_panel_min_t": 32,
    # below this many steps it keeps x_t W_ih^T in its steps whatever the weights' size: the projection
    # over all steps packs W_ih^T at every call, which two steps do not repay (Zen 4, two threads, in the
    # steps against hoisted: LSTM I=128 H=256 one step (a streaming step) 39 us against 58, two 49 / 66;
    # I=H=512 93 / 249 and 141 / 172; I=H=1024 1.11 / 1.39 ms and 1.96 / 1.85; from three steps on the
    # rule of _hoists: I=H=1024 2.7 / 2.2 ms)
    "latency_hoist_min_t": 3,
    # ... and below this many when a thread's share of [W_ih, W_hh] stays in L2 (within 3/4 of it), where a
    # step reads its W_ih rows again cheaply (two threads, hoisted / in the steps: GRU I=H=256 (768 KB a
    # thread) T=4 1.30, T=8 1.26, T=12 0.88, T=16 0.85; LSTM I=H=192 1.35, 1.21, 1.24, 0.92; LSTM I=128 H=256
    # 1.23, 1.13, 1.13, 0.94; beyond L2, RNN I=H=512 (1 MB) T=4 1.30, T=8 0.92)
    "latency_hoist_l2_min_t": 12,
    # the few-rows kernel (up to few_rows rows) reads the weight rows in place, not packed, below this
    # many steps, or below units_rows_max_t when a thread's share of them is beyond L2 (_panels)
    "units_rows_short_t": 8,
    # ... a share this many times L2 (just beyond it panels still win: two threads, B=3, I=256, H=512, 2 MB
    # a thread, T=30: 2.0 ms against 2.5; at 2.4 MB even, LSTM B=2 I=768 H=384 bidirectional L=2)
    "units_rows_l2_share": 1.5,
    "units_rows_min_bytes": 256 * 1024,
    "units_rows_max_t": 100,
    # ... where the few-rows kernel does not prefetch (Machine.few_prefetch: AMD), whose panels then stream
    # from L3 at a sequential read's rate (Zen 4: 90 GB/s a core, rows of two x rows 71): panels / rows,
    # two threads, GRU B=2 I=2400 H=600 L=2 T=50 0.89, LSTM B=3 I=256 H=768 T=60 0.80, B=2 I=512 H=1024
    # T=30 0.97, T=24 1.04, GRU B=2 I=2400 H=600 T=30 1.03, LSTM B=2 I=H=1024 L=2 bi T=10 1.25
    "units_rows_max_t_hw": 40,
    # With the packs kept from call to call (Call.kept: float32 inference, rnnfast.nn._packs) a call does not
    # pack but reads the weights once to check the packs (their digest): from this many steps on the panels,
    # which stream faster than rows, whatever the share; below it as packing at every call, the check's read
    # costing about what panels gain. Two threads, five calls in a row, rows / panels on kept packs, 44
    # seeded few-rows shapes where the rules differ: T=4-6 0.64-0.96, T=8 0.89-1.15 (about 1.01), T=12
    # 0.92-1.05, T=16 0.99-1.07, T=24 1.06-1.20 (bench/plan_ab.py --calls 5, bench/README session 26)
    "units_kept_panels_min_t": 16,
    # --- the back-off and streaming-step rules (ThreadPolicy) ---
    # one thread for this long once busy calls are the rule, doubled while the probe on several threads
    # at the end of each back-off finds the cores busy again, up to the longest (see ThreadPolicy.note)
    "backoff_min_s": 0.005,
    "backoff_max_s": 0.25,
    # the evidence: the last backoff_window calls on several threads, of which at least backoff_evidence
    # found the cores busy (one busy call is a transient: in bench/grid.py a peer's pool threads spinning
    # down, or a partner waking after an idle pause, sent gru-B1-T20-I512-H1024 to one thread for whole
    # rounds: 11.5 ms against 6.2 without the back-off)
    "backoff_window": 8,
    "backoff_evidence": 2,
    # a streaming step within this long of the last may use several threads; of every step_period
    # such steps, step_explore run the way that has lately been slower
    "step_warm_s": 0.001,
    "step_period": 128,
    "step_explore": 4,
    # a small call (below min_parallel_flops, which the planner gives one thread) within this long of the
    # layer's last small call may use several threads, chosen as the streaming steps are (step_period,
    # step_explore), per shape: back to back, libgomp's workers still spin and two threads win (LSTM B=4
    # T=8 I=32 H=64 25 -> 20 us, GRU B=8 T=10 I=16 H=48 28 -> 22); 100 us apart they have gone to sleep
    # and two threads lose 1.6x, 1 ms apart 4-9x
    "small_warm_s": 50e-6,
    # ... when the plan with the threads awake gives them tasks of their own (row blocks, directions) of
    # this many steps or more. 40 seeded small calls, back to back, rule / one thread: T >= 16 1.06-1.68x
    # (11 shapes); T = 4-8 0.79-1.26, and the few-rows kernel's shares (a barrier a step) 0.79-0.84
    "small_min_t": 16,
    # --- batch >= 2 ---
    # calls shorter than this are "short" (below: BLAS for a few gate rows, else the kernels as any call)
    "packed_min_t": 4,
    # ... BLAS's GEMM for a short inference call of at most this many (row, step, gate) products, B T G (its
    # small-matrix path beats packing there: GRU B=2-4 T=1 H=64-96, RNN B=6-8 T=1, LSTM B=2 T=2 H=48 0.73x);
    # above it the packed and few-rows kernels, whose per-call pack BLAS pays at every step instead (88
    # seeded shapes, B 2-64, H 16-384, T 1-3, two threads: 1.26x faster in geometric mean, 0.73-3.45x; one
    # thread 1.24x; bench/short_calls.py --rule)
    "short_blas_max_bgt": 16,
    # ... unless inference on weights this big (one direction of the widest layer): then the few-rows kernel
    # reading the weight rows in place (no pack), up to short_rows_max rows, x_t W_ih^T in the steps. BLAS
    # packs the weights at every call too (Zen 4, LSTM I=H, one thread, T=1, BLAS / rows in place: H=256
    # (2 MB) B=2 196 / 64 us, B=16 233 / 160, B=64 613 / 620; H=1024 B=2 7.7 / 1.2 ms (two threads); 0.5 MB
    # (H=128) B=2 25 / 40 us, B=4 79 / 53: OpenBLAS's small-matrix path still wins there)
    "short_rows_min_bytes": 1 << 20,
    "short_rows_max": 32,
    # a call whose input product is one GEMM over all its steps (hoist) makes it on W_ih's rows in place
    # (rf_gemv_nb), not packed, when it has 4 to proj_in_place_rows valid rows that rf_gemv_nb takes in one
    # pass over W_ih (groups of 4, 3 or 5: 1-3 rows left after 4s are one more pass, LSTM B=1 T=30 I=H=1024
    # 0.97x; groups of 3 or 5, session 25: GRU B=2 T=5 I=512 H=768 1.37x, LSTM B=3 T=6 I=256 H=512 bi
    # 1.14x, LSTM B=1 T=9 I=H=1024 1.06x), on W_ih of proj_in_place_min_bytes or more and
    # proj_in_place_min_k inputs or more (the pack then streams
    # megabytes for a few rows; small or narrow W_ih 0.95-1.01x). Zen 4, packed / in place, two threads
    # (one): LSTM B=2 T=10 I=H=1024 L=2 bi 1.04-1.06x (1.07), B=2 T=12 I=2048 H=1024 1.11 (1.08), B=2 T=8
    # I=H=512 1.05 (1.06); GRU B=1 T=16 I=1536 H=768 bi 1.05 (1.06), B=4 T=8 I=1024 H=512 1.05 (1.05); RNN
    # B=2 T=16 I=H=2048 1.07 (1.06); from 64 rows 0.89-0.98. Since rf_gemv_nb pins its registers (session
    # 24) W_ih from 1 MB and 128 inputs (was 4 MB and 512), packed / in place, two threads (one): GRU B=2
    # T=8 I=256 H=1024 1.10-1.14 (1.10), B=1 T=16 1.08, B=3 T=8 1.11; LSTM B=2 T=4 I=384 H=512 1.12 (1.18),
    # B=4 T=4 I=256 H=768 1.08, B=1 T=12 I=512 H=384 1.13 (1.10); RNN B=2 T=8 I=512 H=512 1.10; W_ih of 1-2.4
    # MB or 32 rows 0.98-1.03. (The kernels read these: set_proj_in_place.)
    "proj_in_place_rows": 32,
    "proj_in_place_min_bytes": 1 << 20,
    "proj_in_place_min_k": 128,
    # fewest rows worth a row task of its own (the kernel's MIN_ROWS_PER_TASK). 3, not 4: B=6 on two threads
    # ran as one task of 6 rows on one thread (or shared out its units) where two tasks of 3 rows, each on
    # the few-rows product, take half the time (Zen 4, old plan / new: LSTM B=6 T=128 I=2 H=24 1.90x, RNN
    # B=6 T=200 I=3 H=48 2.40x, GRU B=6 T=50 I=512 H=100 L=2 1.15x; 16 of 393 grid and seeded shapes changed,
    # inference 1.03-2.40x, training 0.85-1.21x; B=7 as 4 + 3 rows against shared units, LSTM I=H=64 0.92x)
    "rows_per_task": 3,
    # rates of the roofline: a core's multiply-add rate on the packed kernel (one thread, 64 x 2048 x
    # 1024: 167 GFLOP/s); bandwidths by where
    # the weights fit (panels streamed from L2 at 154 GB/s, rows in place at 118; beyond L2 a core read
    # 30 GB/s: batch 1, I=256, H=512, 3.1 MB a thread, 105 us a step), and memory beyond L3. A step
    # whose weights come from beyond L2 does not overlap its reads with its arithmetic fully: it costs
    # the larger of the two plus `overlap` of the smaller (LSTM B=16, I=H=1024, two threads: the input
    # product hoisted into one GEMM 65.6 ms, inside each step 78.6; at B=128, I=H=512, where a step is
    # arithmetic, inside each step was 1-3% faster)
    "core_flops": 150e9,
    "overlap": 0.5,
    # ... and those two rates where the hardware streams L3 (Machine.hw_rates: AMD), for inference. Zen 4
    # runs a 512-bit multiply-add as two halves (rf_gemm_packed, one thread, 8-48 x 512 x 256: 110-113
    # GFLOP/s) and its prefetcher streams L3 at about 90 GB/s a core. The pair fitted to plan_ab sweeps
    # of this machine (every candidate of 93 grid points and 80 seeded few-rows shapes, the 137 over 0.2
    # ms), as the values that minimise chosen / fastest: inference 1.037 -> 1.024, misses over 5% 29 ->
    # 25; raced old plan against new (28 of 393 grid and seeded shapes change), two threads 1.12x, one
    # 1.08x (bench/README, session 24). With the Xeon's rates the units kernel's L2-sized shares and
    # barriers won against row tasks streaming all the weights (LSTM B=6 T=100 I=128 H=200: 1.30x slower).
    # Training keeps the reference rates (model_machine): its plans raced no better with these
    # (1.00-1.03x, 0.66-1.31), the backward's reads being another matter the model leaves out
    "core_flops_hw": 105e9,
    "bw_l3_hw": 84e9,
    # ... and there a step streaming its weights from beyond L2 overlaps those reads with its arithmetic
    # fully (within L2 `overlap` as elsewhere). With the packs kept (session 26) the model's 0.5 priced the
    # packed kernel's steps that stream [W_ih, W_hh] or many rows a thread too high: LSTM B=8 T=30 I=H=512,
    # two threads, x_t W_ih^T in the steps 7.1 ms modelled, 4.9 measured (at 163 us a step, the arithmetic
    # alone; that call keeps its plan, the GEMM over all steps still modelled cheaper). Raced old plan / new
    # on the 619 inference points of grid seeds 13-24 and 150 seeded few-rows shapes, where it changes the
    # plan, five calls in a row: two threads 15 points, 1.07x in geometric mean (1.00-1.14, a bidirectional
    # few-row call's directions on a thread each rather than both threads sharing out the units a direction
    # at a time); one thread 33, 1.01x (0.90-1.07); overlap 0 within L2 too lost on one thread, 1.00x
    # (0.80-1.07: GRU and LSTM H=24-100 to the few-rows kernel). bench/README, session 27
    "overlap_hw": 0.0,
    # independent multiply-add chains a core needs to reach core_flops (two FMA ports, 4 cycles each).
    # rf_gemm_packed runs two a row of a block of up to 8 rows; the few-rows product (csrc/rf_units.h, up to
    # few_rows rows) four a row. Fewer chains wait on latency: one thread, GRU B=2, T=50, I=H=256, the
    # input product hoisted, packed 1.02 ms, few-rows 0.88; LSTM B=3, T=200, I=H=64 0.55 / 0.48
    "fma_chains": 8,
    # ... and where the hardware streams (Machine.hw_rates): Zen 4 issues one 512-bit multiply-add a cycle
    # (two halves), so four chains keep it busy and rf_gemm_packed's rows cost in proportion from two on
    # (one thread, LSTM T=200 I=H=128, packed, B=2 / 3 / 4 / 8: 1.12 / 1.59 / 2.14 / 4.22 ms)
    "fma_chains_hw": 4,
    "few_rows": 4,
    # BLAS's GEMM over all steps reaches the core's rate from inner products this long (half of it at
    # very short ones: B=256, T=20, I=H=64 on one thread, the hoisted product cost 0.85 ms more than the
    # in-step one)
    "gemm_full_k": 512,
    # a BLAS call and its parallel region, on top of its arithmetic
    "gemm_call_s": 3e-6,
    # the input product is hoisted out of the steps when a step's weights come from beyond L2 and their
    # reads take at least this share of its arithmetic's time (see _hoists)
    "hoist_reads_share": 0.33,
    # ... and where the hardware streams (hw_rates), whose steps overlap reads beyond L2 with their arithmetic
    # fully (overlap_hw): there the reads cost a step nothing until they outlast its arithmetic, and the
    # GEMM's pass over the (N, G*H) projection is all the hoist adds (two threads, in the steps against
    # hoisted: LSTM B=8 T=50 I=1024 H=128 1.12x, GRU B=4 T=50 I=H=256 1.13x, LSTM B=8 T=30 I=H=512 1.07x)
    "hoist_reads_share_hw": 1.0,
    "bw_l1": 300e9,
    "bw_l2": 120e9,
    "bw_l3": 30e9,
    "bw_mem": 12e9,
    # fixed costs: a step of a task (calls, pointers), a barrier among the threads (about 1 us here: B=3,
    # I=H=64 ran 2.56 us a step on two threads sharing out the units, 3.1 on one), the
    # fused cell pass per row and unit (LSTM: 4 activations, about 1 ns)
    "step_s": 0.3e-6,
    "barrier_s": 1.0e-6,
    # starting a parallel region on a second thread (waking it: about 10 us on these virtual CPUs); row
    # tasks start two a layer (packing, then the tasks), the unit-sharing kernels one. B=8, T=8, I=48,
    # H=96: two row tasks 0.141 ms, threads sharing out the units 0.095
    "region_s": 10e-6,
    "cell_s": 1.0e-9,
    # the few-rows kernel: up to this many rows (more share out by rows better: B=16, I=256, H=128 on two
    # threads, rows 1.37 ms, units 1.64; at B=8 units still won, 0.095 against 0.141 ms at I=48, H=96)
    "units_max_rows": 12,
    # ... and on one thread, up to this many rows (one thread, I=256, H=512, T=50: B=4 7.4 ms against the
    # packed kernel's 9.3, B=6 9.0 / 10.3, B=8 12.0 / 12.1, B=12 15.7 / 14.5; I=128, H=1024, T=100: B=4
    # 61.7 / 66.9, B=6 68.7 / 70.2, B=8 78.3 / 76.5)
    "units_one_thread_rows": 6,
    # the unit-sharing kernels' serpentine (csrc/rf_gemm.h) finds about this much of L2 still holding
    # the weights the previous step read last (LSTM B=2, I=256, H=512, 4.2 MB on one thread: 17.2 ms ->
    # 12.6; two threads, 2.1 MB each: 5.6 -> 4.5)
    "serp_l2_share": 0.75,
    # a call with fewer multiply-adds than this runs on one thread (waking a second costs 5-20 us)
    "min_parallel_flops": 2.0e6,
}


@dataclass(frozen=True)
class Machine:
    """Cache sizes in bytes (per core for L1 and L2, shared L3), whether the few-rows kernel prefetches
    its panels in software (csrc/rf_gemm.h's rf_few_prefetch: off on AMD processors, whose hardware streams
    them faster alone), and whether the cost model takes TABLE's _hw rates (where that hardware streams:
    its L3 reads and, on Zen 4's half-width multiply-adds, its arithmetic; inference only, model_machine)."""

    l1d: int
    l2: int
    l3: int
    few_prefetch: bool = True
    hw_rates: bool = False  # the cost model's _hw rates (TABLE): AMD, where few_prefetch is off


def _sysfs_caches() -> dict:
    """{level: bytes} of cpu0's data / unified caches from sysfs (Linux), or {}."""
    out: dict[int, int] = {}
    base = "/sys/devices/system/cpu/cpu0/cache"
    try:
        names = os.listdir(base)
    except OSError:
        return out
    for name in names:
        if not name.startswith("index"):
            continue
        try:
            with open(os.path.join(base, name, "level")) as f:
                level = int(f.read())
            with open(os.path.join(base, name, "type")) as f:
                kind = f.read().strip()
            with open(os.path.join(base, name, "size")) as f:
                text = f.read().strip()
        except (OSError, ValueError):
            continue
        if kind == "Instruction":
            continue
        mult = {"K": 1024, "M": 1024 ** 2, "G": 1024 ** 3}.get(text[-1:], 1)
        try:
            out[level] = int(text.rstrip("KMG")) * mult
        except ValueError:
            continue
    return out


@functools.lru_cache(maxsize=1)
def machine() -> Machine:
    """This machine's cache sizes, read once (sysfs; 32 KB / 1 MB / 8 MB where it cannot be read)."""
    c = _sysfs_caches()
    few = _few_prefetch()
    return Machine(l1d=c.get(1, 32 * 1024), l2=c.get(2, 1024 ** 2), l3=c.get(3, 8 * 1024 ** 2),
                   few_prefetch=few, hw_rates=not few)


def model_machine(c: "Call") -> Machine:
    """The machine as the cost model sees call ``c``: training keeps TABLE's reference rates (the model
    costs its forward alone, and its plans measured no better with the _hw ones: see TABLE)."""
    m = machine()
    return replace(m, hw_rates=False) if c.training and m.hw_rates else m


def _few_prefetch() -> bool:
    """The kernels' rf_few_prefetch, as the extension set it when it loaded (True without the extension)."""
    try:
        from ._kernels import _recurrent
    except ImportError:  # (a source checkout not built: the planner alone)
        return True
    return _recurrent.few_prefetch()


@dataclass(frozen=True)
class Call:
    """What the planner needs of a call: the cell, float32 or not, B rows (sequences), T steps, N
    valid steps in all (sum of lengths), I inputs, H units, D directions, L layers, training or not, and
    whether the weight packs are kept from call to call."""

    cell: Cell
    f32: bool
    B: int
    T: int
    N: int
    I: int
    H: int
    D: int = 1
    L: int = 1
    training: bool = False
    kept: bool = False  # inference keeps its weight packs from call to call (rnnfast.nn._packs)

    def key(self, threads: int) -> str:
        """A stable text key for the tuning cache (lengths enter only through N / (B T))."""
        fill = round(self.N / max(1, self.B * self.T), 2)
        return (f"{self.cell.name.lower()} f32={int(self.f32)} B={self.B} T={self.T} fill={fill} I={self.I} "
                f"H={self.H} D={self.D} L={self.L} train={int(self.training)} threads={threads}")


# the kernels' numbers for them (_recurrent.Kernel)
KERNELS = {"blas": 0, "packed": 1, "units": 2, "latency": 3}


@dataclass(frozen=True)
class Plan:
    """How a call runs (see the module docstring)."""

    kernel: str
    proj: str
    split: str
    threads: int
    panels: bool = False  # batch-1 and few-rows kernels: weights packed into panels first (else rows in place)
    tuned: bool = False   # taken from the tuning cache

    @property
    def kernel_args(self) -> tuple[int, bool, bool]:
        """(kernel number, hoist, panels) as the kernel entry points take them."""
        return KERNELS[self.kernel], self.proj == "gemm", self.panels

    def __str__(self) -> str:
        extra = "+panels" if self.panels else ""
        return f"{self.kernel}{extra} proj={self.proj} split={self.split}x{self.threads}" + (
            " (tuned)" if self.tuned else "")


# --------------------------------------------------------------------------------------------- costs

def _rate(name: str, m: Machine) -> float:
    """TABLE's ``name`` for this machine: its ``name``_hw where m.hw_rates and TABLE has one."""
    hw = name + "_hw"
    return TABLE[hw] if m.hw_rates and hw in TABLE else TABLE[name]


def _bandwidth(nbytes: float, m: Machine) -> float:
    """Bytes a second one core streams a block of ``nbytes`` it read last step: from L1, L2 or beyond."""
    if nbytes <= m.l1d // 2:
        return TABLE["bw_l1"]
    if nbytes <= m.l2 * 3 // 4:
        return TABLE["bw_l2"]
    if nbytes <= m.l3 // 2:
        return _rate("bw_l3", m)
    return TABLE["bw_mem"]


def _chain_rows(rows: int, kernel: str, m: Optional[Machine] = None) -> float:
    """Rows a step's product costs in multiply-adds: a block of rows with fewer than fma_chains independent
    chains (rf_gemm_packed: two a row, 8-row blocks; the few-rows product: four a row) waits on their
    latency and takes as long as a block that has just enough (the batch-1 kernel: its own GEMV, as is; the
    few-rows kernel's one row costs as rf_gemm_packed's: its per-step costs outweigh the chains there). ``m``:
    the machine whose fma_chains rate applies (TABLE's reference without it)."""
    if kernel == "latency":
        return rows
    chains = TABLE["fma_chains"] if m is None else _rate("fma_chains", m)
    if kernel == "units" and 2 <= rows <= TABLE["few_rows"]:
        return max(rows, chains / 4)
    full, rest = divmod(rows, 8)
    return 8 * full + (max(rest, chains / 2) if rest else 0)


def _read_time(nbytes: float, m: Machine, serpentine: bool) -> float:
    """Seconds one core takes to stream a step's ``nbytes`` of weights. Read in the same order every step
    they come from where they fit (_bandwidth); read back and forth (the unit-sharing kernels' serpentine,
    csrc/rf_gemm.h), a share beyond L2 finds serp_l2_share of L2 still holding what the last step read."""
    bw = _bandwidth(nbytes, m)
    hits = TABLE["serp_l2_share"] * m.l2
    if not serpentine or nbytes <= hits or bw >= TABLE["bw_l2"]:
        return nbytes / bw
    return hits / TABLE["bw_l2"] + (nbytes - hits) / bw


def _step_cost(rows: int, cols: int, K: int, m: Machine, kernel: str = "packed") -> float:
    """One thread's per-step product C (rows, cols) = A (rows, K) . W (K, cols) on packed W in ``kernel``:
    the larger of its multiply-adds (of as many rows as _chain_rows says) and its weight bytes (_read_time),
    and part of the smaller (TABLE's overlap; its _hw rate for weights beyond L2)."""
    work = 2.0 * _chain_rows(rows, kernel, m) * cols * K / _rate("core_flops", m)
    reads = _read_time(4.0 * cols * K, m, kernel in ("units", "latency"))
    overlap = _rate("overlap", m) if 4.0 * cols * K > m.l2 * 3 // 4 else TABLE["overlap"]  # (_bandwidth's L2)
    return max(work, reads) + overlap * min(work, reads) + TABLE["step_s"]


def _proj_cost(c: Call, F: int, threads: int, m: Machine) -> float:
    """x W_ih^T over all N valid steps (each direction) as one GEMM on ``threads`` threads (W_ih read
    once), and its (N, G*H) result written and read back."""
    GH = c.cell.gates * c.H
    gates = 8.0 * c.N * GH * c.D
    eff = min(1.0, 0.5 + F / TABLE["gemm_full_k"])  # short inner products run BLAS below its peak
    work = 2.0 * c.N * F * _whole_panels(GH) * c.D / (_rate("core_flops", m) * eff * threads)
    return work + gates / _bandwidth(gates, m) + TABLE["gemm_call_s"]


def _widest(c: Call) -> int:
    """The widest layer input of a call: I, or D H for the layers after the first. One plan serves them
    all, and the widest weighs most: RNN B=8, T=100, I=1, H=512, L=2, bidirectional, one thread, ran 44 ms
    with x_t W_ih^T in the steps (the plan of its first layer, F = 1) and 27 hoisted (its second, F = 1024)."""
    return max(c.I, c.D * c.H) if c.L > 1 else c.I


def _cost(c: Call, kernel: str, proj: str, threads: int, m: Machine) -> float:
    """Modelled seconds of the forward of a call's widest layer (_widest) under one candidate; backward
    repeats the recurrence's shape and follows the same choice."""
    G, H = c.cell.gates, c.H
    F = _widest(c)
    K = H if proj == "gemm" else F + H
    steps = c.N / max(1, c.B)  # mean valid steps of a row: the recurrence's length
    extra = _proj_cost(c, F, threads, m) if proj == "gemm" else 0.0
    pack = 8.0 * K * G * H / TABLE["bw_mem"]  # every kernel here packs its weights once a call ...
    panels = kernel not in ("latency", "units") or _panels(c, kernel, threads, proj, m)
    if not panels:
        pack = 0.0  # ... but those that read the rows in place (short batch-1 and few-rows calls)
    regions = 0.0 if threads <= 1 else TABLE["region_s"] * (c.D + (proj == "gemm"))
    if kernel in ("units", "latency"):  # threads share out the units, meeting once a step; directions in turn
        share = _units_share(H, threads, kernel, panels, c.training)
        sync = TABLE["barrier_s"] * c.cell.barriers if threads > 1 else 0.0
        step = _step_cost(c.B, G * share, K, m, kernel) + sync + TABLE["cell_s"] * c.B * share
        return regions + extra + c.D * (pack / threads + steps * step)
    nblk, ntask = _row_tasks(c, threads)
    rows = -(-c.B // nblk)
    step = _step_cost(rows, _whole_panels(G * H), K, m) + TABLE["cell_s"] * rows * H
    rounds = -(-ntask // min(threads, ntask))
    regions = 0.0 if min(threads, ntask) <= 1 else TABLE["region_s"] * (2 + (proj == "gemm"))
    # (each direction's weights are packed by all the threads, one direction after the other)
    return regions + extra + c.D * pack / min(threads, ntask) + rounds * steps * step


# RF_NR (csrc/rf_gemm.h): the packed kernels' panels are this many columns wide
PANEL_COLS = 32


def _units_share(H: int, threads: int, kernel: str, panels: bool, training: bool = False) -> int:
    """Units of the most loaded thread, as a step's product pays for them. The few-rows kernel gives each
    thread whole 32-unit panels where there are enough units (rf_units_share: H=100 on two threads, 64 and
    36) and, packed, computes every gate's share in whole panels of PANEL_COLS columns, a partial one as a
    full one. One thread, B=2-3, T=200, I=48, packed / few-rows kernel: LSTM H=32 0.92-0.93, H=64
    1.00-1.06, H=96 0.97, H=128 0.98-1.00; H=40 1.26-1.28, H=48 1.15-1.20 (padded to 64 units); two
    threads, counting the shares' panels: GRU B=12 T=200 I=256 H=100 inference 1.24x faster (the packed
    kernel), B=12 T=8 I=8 H=40 2.09x. Not in training on several threads, whose cost the model takes from
    the forward alone: there it sent GRU B=3 T=20 I=512 H=112 L=2 and RNN B=6 T=200 I=1 H=100 to the
    packed kernel on one thread, 0.67x and 0.80x."""
    share = -(-H // threads)
    if kernel != "units" or (training and threads > 1):
        return share
    if threads > 1 and H >= PANEL_COLS * threads:
        share = _whole_panels(share)
    return _whole_panels(share) if panels else share


def _whole_panels(cols: int) -> int:
    """Columns a packed product computes for ``cols``: whole panels of PANEL_COLS (a partial one costs as a
    full one)."""
    return -(-cols // PANEL_COLS) * PANEL_COLS


def _row_tasks(c: Call, threads: int) -> tuple[int, int]:
    """Row blocks per direction and tasks in all, as the kernel cuts them (n_blocks)."""
    want = -(-threads // c.D)
    most = max(1, c.B // int(TABLE["rows_per_task"]))
    nblk = max(1, min(want, most))
    return nblk, nblk * c.D


# ---------------------------------------------------------------------------------------------- plans

def _split_name(c: Call, kernel: str, threads: int) -> str:
    if threads <= 1:
        return "none"
    if kernel in ("latency", "units"):
        return "units"
    nblk, _ = _row_tasks(c, threads)
    if c.D == 2:
        return "rows+directions" if nblk > 1 else "directions"
    return "rows"


def _latency_threads(c: Call, threads: int) -> int:
    """Batch 1, one direction: threads share out the units unless the weights are small (a barrier a step
    costs more than half the product; TABLE's latency_min_split_bytes)."""
    G, H = c.cell.gates, c.H
    small = G * H * (max(c.I, H) + H) * 4 < TABLE["latency_min_split_bytes"]
    return 1 if small else threads


def _hoists(c: Call, kernel: str, threads: int, m: Machine) -> bool:
    """Whether the input product leaves the steps for one GEMM over all of them: when a step would
    stream its share of [W_ih, W_hh] from beyond half of L2 and those reads are a good part of the step
    (hoist_reads_share of its arithmetic), or, within half of L2, when the step's rows are too few for its
    multiply-add chains (_chain_rows) and the model costs the GEMM less. Within L2 the step's fused
    product is otherwise cheaper than a GEMM and a pass over the (N, G*H) projection: batch 1, I=128,
    H=256, T=100 on two threads 0.88 ms fused against 1.03 hoisted; beyond L2 a few rows win big: I=256,
    H=512, 10.8 against 5.0 at batch 1, 12.6 against 8.5 at batch 2; with many rows the step is
    arithmetic and stays fused: B=128, I=H=512 15% faster. A batch-1 call of fewer than
    latency_hoist_min_t steps (a streaming step) keeps it in the steps: the GEMM would pack W_ih^T first;
    so does one of fewer than latency_hoist_l2_min_t steps whose share of the weights stays in L2."""
    G, H = c.cell.gates, c.H
    if kernel == "latency" and c.N < TABLE["latency_hoist_min_t"]:
        return False
    if kernel in ("units", "latency"):
        rows, cols = c.B, G * -(-H // threads)
    else:
        rows, cols = -(-c.B // _row_tasks(c, threads)[0]), G * H
    F = _widest(c)
    nbytes = 4.0 * cols * (F + H)
    if kernel == "latency" and c.N < TABLE["latency_hoist_l2_min_t"] and nbytes <= m.l2 * 3 // 4:
        return False
    if nbytes <= m.l2 // 2:  # (a step's other data shares L2: batch 1 on one thread, I=128, H=256, 1.5 MB,
        # ran 1.41 ms hoisted against 1.84 fused; on two threads, 0.75 MB each, fused won) ... unless the
        # step's rows are too few for its chains, and the GEMM at the full rate costs less (see _cost):
        # B=1 bidirectional, I=24, H=48, T=1000, L=2 on one thread 3.3 ms fused, 2.5 hoisted
        few = _chain_rows(rows, kernel, m) > rows
        return few and _cost(c, kernel, "gemm", threads, m) < _cost(c, kernel, "step", threads, m)
    work = 2.0 * rows * cols * (F + H) / _rate("core_flops", m)
    # (directions on threads of their own stream two sets of weights through the one L3: beyond half of it,
    # memory's rate; LSTM B=3 T=64 I=1536 H=384 bidirectional, 11.8 MB a direction, hoisted 1.27x faster)
    apart = 1 if kernel in ("units", "latency") else min(c.D, threads)
    bw = TABLE["bw_mem"] if apart > 1 and m.hw_rates and nbytes * apart > m.l3 // 2 else _bandwidth(nbytes, m)
    # (the few-rows kernel reading the weight rows in place streams them slower than panels, which the model
    # does not price: it keeps the reference share; one thread, LSTM B=3 T=8 I=8 H=300 L=2 bidirectional 1.37x)
    in_place = kernel == "units" and not _panels(c, kernel, threads, "step", m)
    share = TABLE["hoist_reads_share"] if in_place else _rate("hoist_reads_share", m)
    return nbytes / bw >= share * work


def _panels(c: Call, kernel: str, threads: int, proj: str, m: Machine) -> bool:
    """Whether the kernel packs its weights into panels first: the batch-1 kernel from latency_panel_min_t
    steps on (packing costs what three steps gain); the few-rows kernel (up to few_rows rows) unless it
    reads the weight rows in place (rf_gemv_nb) in inference: a pack reads and writes them once more than
    the steps do, which panels repay only from L2 (they stream faster from there than rows do) and over
    enough steps. With the packs kept (``c.kept``) a call only checks them (one read of the weights): panels
    from units_kept_panels_min_t steps on, whatever the share.
    Packing at every call, one thread, B=2, I=H=1024, T=10: panels 9.5 ms, rows 8.1; T=60 (I=512) 42.8 /
    41.0; I=256, H=512 (4 MB) T=30 5.4 / 5.2, T=100 equal; within L2 (two threads, B=3, I=256, H=512, T=30) 2.0 / 2.5,
    but GRU B=2, H=256, T=5 0.20 / 0.16 (rows: a share of units_rows_l2_share L2 or more)."""
    if kernel == "latency":
        return c.N >= TABLE["latency_panel_min_t"]
    if kernel != "units" or c.B > TABLE["few_rows"] or c.training:
        return kernel == "units"  # (training packs: the backward's pack then finds the weights in cache)
    steps = c.N / max(1, c.B)
    if c.kept and steps >= TABLE["units_kept_panels_min_t"]:  # (no pack at the call: a check, one read)
        return True
    share = 4.0 * c.cell.gates * -(-c.H // threads) * (c.H if proj == "gemm" else _widest(c) + c.H)
    if share < TABLE["units_rows_min_bytes"]:
        return True  # (small weights pack cheaply, and short rows end in scalar tails: H=48 2.3x slower)
    beyond_l2 = share >= TABLE["units_rows_l2_share"] * m.l2
    max_t = TABLE["units_rows_max_t" if m.few_prefetch else "units_rows_max_t_hw"]
    return not (steps < TABLE["units_rows_short_t"] or (beyond_l2 and steps < max_t))


def _short_in_place(c: Call) -> bool:
    """Whether a float32 inference call too short to pack for (fewer than packed_min_t steps) runs the
    few-rows kernel on the weight rows in place rather than BLAS: weights of short_rows_min_bytes or more
    (a direction of the widest layer; BLAS packs them at every call) and at most short_rows_max rows."""
    nbytes = 4.0 * c.cell.gates * c.H * (_widest(c) + c.H)
    return (c.f32 and not c.training and c.H >= 2 and c.B <= TABLE["short_rows_max"]
            and nbytes >= TABLE["short_rows_min_bytes"])


def _short_blas(c: Call, streaming: bool = False) -> bool:
    """Whether a float32 call too short to pack for (fewer than packed_min_t steps, not batch 1) runs
    BLAS's GEMM a step: in training (its backward packs the weights twice more: the kernels lost there on
    small layers, GRU B=32 T=1 H=48 0.65x, and won only from H of about 128), and in inference where it has
    few (row, step, gate) products (short_blas_max_bgt), whose packing BLAS's small-matrix path avoids; or
    the few-rows kernel on the weight rows in place (_short_in_place). A streaming step of several rows
    (``streaming``, layer.step) keeps BLAS: its kernels would pack the weights at every step (two threads,
    LSTM B=16 H=128 0.59x, RNN B=32 H=128 0.52x)."""
    if c.T >= TABLE["packed_min_t"] or (c.B == 1 and c.D == 1):
        return False
    few = c.B * c.T * c.cell.gates <= TABLE["short_blas_max_bgt"]
    return streaming or c.training or few or _short_in_place(c)


def candidates(c: Call, threads: int, streaming: bool = False) -> Iterator[Plan]:
    """Every plan the kernels can run for this call (float32: the batch-1 kernel, or packed and few-rows,
    each with either product layout; float64: BLAS only; short calls where _short_blas says: BLAS, after
    the few-rows kernel on the weight rows in place where _short_in_place says), the planner's choice first:
    the kernel by the cost model, its product layout by _hoists; the other layouts after, for tuning."""
    threads = max(1, threads)
    if not c.f32 or _short_blas(c, streaming):
        if _short_in_place(c):
            yield Plan("units", "step", _split_name(c, "units", threads), threads, False)
        n = min(threads, _row_tasks(c, threads)[1])
        yield Plan("blas", "gemm", _split_name(c, "blas", n), n)
        return
    m = model_machine(c)
    if c.B == 1 and c.D == 1:
        kernels = [("latency", _latency_threads(c, threads))]
    else:
        kernels = [("packed", min(threads, _row_tasks(c, threads)[1]))]
        if not (threads < 2 or c.B > TABLE["units_max_rows"] or c.H < 2):
            kernels.append(("units", threads))
        elif threads < 2 and 2 <= c.B <= TABLE["units_one_thread_rows"] and c.H >= 2:
            # one thread: the few-rows product where rows are too few for rf_gemm_packed's chains, and the
            # serpentine (not at one row, see _chain_rows: B=1 bidirectional, I=24, H=48, T=1000 3.9 ms,
            # packed 3.4)
            kernels.append(("units", 1))
    ranked = []
    for kernel, n in kernels:
        proj = "gemm" if _hoists(c, kernel, n, m) else "step"
        ranked.append((_cost(c, kernel, proj, n, m), kernel, n, proj))
    ranked.sort()
    firsts = [Plan(k, proj, _split_name(c, k, n), n, _panels(c, k, n, proj, m)) for _, k, n, proj in ranked]
    yield from firsts
    for p in firsts:
        q = replace(p, proj="gemm" if p.proj == "step" else "step")
        yield replace(q, panels=_panels(c, q.kernel, q.threads, q.proj, m))
    for p in firsts:  # the few-rows kernel's other weight layout (in inference, rows in place at any B too:
        # the model prices neither side of that choice well; tuning times it)
        if p.kernel == "units" and (c.B <= TABLE["few_rows"] or not c.training):
            yield replace(p, panels=not p.panels)


def small_call(c: Call, threads: int, awake: Optional[Plan] = None) -> bool:
    """Whether a call on ``threads`` threads is too small to pay for waking a second thread
    (min_parallel_flops; batch 1 in one direction has the batch-1 kernel's own rule): plan_call runs it
    on one. Given ``awake``, its plan were the other threads awake (plan_call's ``awake``): whether it is
    one that ThreadPolicy.small_threads may send to them, with tasks of their own (rows or directions; the
    few-rows kernel's barrier a step costs more than such steps) of small_min_t steps or more."""
    flops = 2.0 * c.N * c.cell.gates * c.H * (c.I + c.H) * c.L * c.D
    small = threads > 1 and flops < TABLE["min_parallel_flops"] and not (c.B == 1 and c.D == 1)
    if awake is None or not small:
        return small
    return awake.threads > 1 and awake.kernel == "packed" and c.T >= TABLE["small_min_t"]


def plan_call(c: Call, threads: int, tuned: Optional[dict] = None, streaming: bool = False,
              awake: bool = False) -> Plan:
    """The plan for a call on ``threads`` threads: the tuning cache's where it has one for this shape,
    else the cheapest candidate by the model; a call too small to pay for a second thread runs on one
    (small_call) unless ``awake`` (the other threads still spin: ThreadPolicy.small_threads).
    ``streaming``: a step of layer.step (see _short_blas)."""
    if tuned:
        hit = tuned.get(c.key(threads))
        if hit is not None:
            return replace(Plan(**hit), tuned=True)
    if not awake and small_call(c, threads):
        threads = 1
    return next(candidates(c, threads, streaming))


# --------------------------------------------------------------------------------------- thread policy

class ThreadPolicy:
    """The batch-1 kernels' thread rules that depend on what the machine did lately, per layer.

    * Back-off: a call on several threads whose threads found the cores busy (a long wait at a step's
      barrier; the kernel then ends the call on one thread) is evidence that another process holds a
      core. The layer runs its next calls on one thread for ``backoff_min_s`` only when such calls are
      the rule rather than a transient (:meth:`worth_backing_off`); the first call after a back-off is a
      probe on several threads: clean, the back-off ends; busy, the back-off doubles, up to
      ``backoff_max_s``.
    * Streaming steps: the first step after a pause (``step_warm_s``) runs on one thread (waking a
      second can cost far more than the step); steps that follow closely run the way whose recent mean
      time is lower, the other way ``step_explore`` of every ``step_period`` steps, to notice a change.
    * Small calls (below ``min_parallel_flops``, which the planner gives one thread): the same choice
      (:class:`Ways`, one per shape) for a call within ``small_warm_s`` of the layer's last small call,
      whose pool of threads is still awake (:meth:`small_threads`); else one thread.

    ``clock`` (back-off and call lengths, seconds) and ``perf`` (step timing) are injectable for tests.
    A call's length is the clock from :meth:`threads` to :meth:`note`. ``stats`` counts what happened:
    calls noted on several threads, busy ones, calls sent to one thread, back-offs started, probes and
    recoveries (``bench/grid.py`` prints it).
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic,
                 perf: Callable[[], float] = time.perf_counter) -> None:
        self.clock = clock
        self.perf = perf
        self.serial_until = 0.0
        self.backoff = TABLE["backoff_min_s"]
        self.probe = False         # the next call on several threads follows a back-off
        self.recent: list = []     # busy (True) or clean of the last calls on several threads
        self.call_s: list = [None, None, None]  # mean length of a call: one thread, several clean, several busy
        self.started: Optional[float] = None  # the clock when threads() let the current call start
        self.stats = dict.fromkeys(("calls", "busy", "serial", "backoffs", "probes", "recoveries"), 0)
        self.step_last = 0.0       # when the last batch-1 step ended (perf)
        self.steps = Ways()        # the streaming steps' way
        self.small_last = 0.0      # when the last small call ended (perf)
        self.small: dict = {}      # the small calls' ways, by shape

    def threads(self, planned: int) -> int:
        """Threads for a batch-1 call the planner gave ``planned``: one while backing off."""
        self.started = now = self.clock()
        if planned > 1 and now < self.serial_until:
            self.stats["serial"] += 1
            return 1
        return planned

    def note(self, threads: int, yields: int) -> None:
        """After a batch-1 call on ``threads`` threads whose barriers had ``yields`` long waits."""
        took = None if self.started is None else self.clock() - self.started
        self.started = None
        if threads <= 1:
            self._fold(0, took)
            return
        busy = yields > 0
        self.stats["calls"] += 1
        self.stats["busy"] += busy
        self._fold(2 if busy else 1, took)
        self.recent = (self.recent + [busy])[-int(TABLE["backoff_window"]):]
        probe, self.probe = self.probe, False
        self.stats["probes"] += probe
        if probe and not busy:  # recovered (the window keeps the evidence: it decides at the next busy call)
            self.stats["recoveries"] += 1
            self.backoff = TABLE["backoff_min_s"]
            return
        if not busy or not self.worth_backing_off():
            if probe:
                self.backoff = TABLE["backoff_min_s"]
            return
        # the probe after a back-off found the cores busy again: twice as long; a first back-off: the shortest
        self.backoff = min(2.0 * self.backoff, TABLE["backoff_max_s"]) if probe else TABLE["backoff_min_s"]
        self.serial_until = self.clock() + self.backoff
        self.probe = True
        self.stats["backoffs"] += 1

    def _fold(self, i: int, took: Optional[float]) -> None:
        """Fold a call's length into the running mean of its kind (0: one thread, 1: several and clean,
        2: several and busy); a call with no start (threads() not asked first) or no length is left out."""
        if took is None or took <= 0.0:
            return
        old = self.call_s[i]
        self.call_s[i] = took if old is None else old + 0.25 * (took - old)

    def worth_backing_off(self) -> bool:
        """Whether one thread is expected to lose less than several, from the recent calls on several threads.

        The cost it models: with a share p of the calls on several threads busy, several threads lose
        p (t_busy - t_one) a call and one thread loses (1 - p) (t_one - t_clean); at least
        ``backoff_evidence`` of the last ``backoff_window`` calls must be busy, and p counts calls not yet
        made as clean (two busy calls of two are not a rule). Unmeasured: t_one is twice t_clean (the split
        halves the call), and with no clean call yet the evidence alone decides.
        """
        n_busy = sum(self.recent)
        window = int(TABLE["backoff_window"])
        if n_busy < TABLE["backoff_evidence"]:
            return False
        t_one, t_clean, t_busy = self.call_s
        if t_clean is None or t_busy is None:
            return True
        if t_one is None:
            t_one = 2.0 * t_clean
        p = n_busy / max(window, len(self.recent))
        return p * (t_busy - t_one) > (1.0 - p) * (t_one - t_clean)

    def step_threads(self, threads: int) -> tuple[int, bool, bool]:
        """(threads, split, warm) for a streaming batch-1 step: one thread when cold; when warm, the
        way chosen by :meth:`choose`."""
        if threads <= 1:
            return threads, False, False
        if self.perf() - self.step_last > TABLE["step_warm_s"]:
            return 1, False, False
        split = self.choose()
        return (threads if split else 1), split, True

    def choose(self) -> bool:
        """Whether a warm step runs on several threads (Ways.choose)."""
        return self.steps.choose()

    def step_time(self, split: bool, took: float) -> None:
        """Fold one warm step's time into its way's running mean (Ways.time)."""
        self.steps.time(split, took)

    # (the streaming steps' counts and running means, as tests set them)
    step_n = property(lambda self: self.steps.n, lambda self, v: setattr(self.steps, "n", v))
    step_ewma = property(lambda self: self.steps.ewma, lambda self, v: setattr(self.steps, "ewma", v))

    def small_threads(self, key, threads: int) -> tuple[int, bool, bool]:
        """(threads, split, warm) for a small call (_planner.small_call) of shape ``key``: one thread unless
        it follows the layer's last small call within small_warm_s (a loop of calls, libgomp's workers
        still spinning); then the way this shape has lately been faster (Ways)."""
        if threads <= 1 or self.perf() - self.small_last > TABLE["small_warm_s"]:
            return 1, False, False
        ways = self.small.get(key)
        if ways is None:
            if len(self.small) >= 64:  # (shapes come and go: a bounded memory of them)
                self.small.clear()
            ways = self.small[key] = Ways()
        split = ways.choose()
        return (threads if split else 1), split, True

    def small_done(self, key, split: bool, warm: bool, took: float) -> None:
        """After a small call of :meth:`small_threads`: its end starts the warm window, and a warm call's
        time ``took`` goes to its way's running mean."""
        self.small_last = self.perf()
        ways = self.small.get(key)
        if warm and ways is not None:
            ways.time(split, took)


class Ways:
    """One thread or several for a run of short kernel calls (a layer's streaming steps, or its small calls
    of one shape), from their recent times: a few calls each way first, then the way whose running mean is
    lower, the other way step_explore of every step_period calls, to notice a change."""

    __slots__ = ("n", "ewma", "prev", "run")

    def __init__(self) -> None:
        self.n = 0                   # warm calls so far
        self.ewma: list = [None, None]  # mean time on one thread, on several
        self.prev: Optional[bool] = None  # the way of the last warm call
        self.run = 0                 # and for how many calls

    def choose(self) -> bool:
        """Whether the next warm call runs on several threads."""
        n = self.n
        self.n = n + 1
        t1, t2 = self.ewma
        explore = TABLE["step_explore"]
        if t1 is None:
            return n >= explore  # a few calls each way first
        if t2 is None:
            return True
        best = t2 <= t1
        return (not best) if n % TABLE["step_period"] < explore else best

    def time(self, split: bool, took: float) -> None:
        """Fold one warm call's time into its way's running mean, unless the way changed within the last
        two calls (the first on several threads after some on one pay for waking the partner). A time
        counts as at most twice the mean: one call that waited for a descheduled partner otherwise kept
        the faster way out of use for thousands of calls; a lasting change still doubles the mean in
        seven."""
        same = self.run + 1 if split == self.prev else 0
        self.prev, self.run = split, same
        if same < 2:
            return
        i = 1 if split else 0
        old = self.ewma[i]
        self.ewma[i] = took if old is None else old + 0.1 * (min(took, 2.0 * old) - old)

