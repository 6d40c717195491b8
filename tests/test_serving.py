"""rnnfast.serving.Batcher: concurrent single-sequence requests coalesced into one call with lengths, each
future resolved with what the model gives for its sequence alone (float32 within 1e-6, float64 within
1e-12: the batched kernel may round in another order than the batch-1 one), errors to their own future."""
import gc
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import rnnfast as rf
from rnnfast.serving import Batcher, QueueFullError

TOL = {np.float32: 1e-6, np.float64: 1e-12}


def _seqs(n, F, rng, dtype=np.float32, t_max=30):
    return [rng.standard_normal((int(rng.integers(1, t_max)), F)).astype(dtype) for _ in range(n)]


def _submit_all(batcher, xs, workers=8):
    """Submit from several threads at once; the futures in request order."""
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(batcher.submit, xs))


@pytest.fixture(scope="module")
def classifier():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((60, 12, 3)).astype(np.float32)
    y = np.where(X[:, :, 0].sum(axis=1) > 0, "up", "down")
    return rf.LSTMClassifier(hidden_size=16, epochs=2, random_state=0).fit(X, y)


def test_rf_serving_is_exported():
    assert rf.serving.Batcher is Batcher


@pytest.mark.parametrize("method", ["predict", "predict_proba"])
def test_estimator_results_equal_predict_alone(classifier, method):
    xs = _seqs(40, 3, np.random.default_rng(1))
    with Batcher(classifier, max_batch_size=16, max_delay_ms=5, method=method) as b:
        futures = _submit_all(b, xs)
        got = [f.result(timeout=30) for f in futures]
        stats = b.stats
    assert stats["requests"] == 40 and stats["batches"] < 40  # requests were coalesced
    for x, g in zip(xs, got):
        ref = getattr(classifier, method)(x[None])[0]
        if method == "predict":
            assert g == ref
        else:
            np.testing.assert_allclose(g, ref, rtol=0, atol=1e-6)


def test_float64_per_step_regressor_and_tokens():
    rng = np.random.default_rng(2)
    X = rng.standard_normal((40, 10, 2))
    reg = rf.GRURegressor(hidden_size=8, epochs=1, random_state=0, dtype="float64").fit(X, X[:, :, 0].cumsum(1))
    xs = _seqs(20, 2, rng, np.float64)
    with Batcher(reg) as b:
        got = [f.result(timeout=30) for f in _submit_all(b, xs)]
    for x, g in zip(xs, got):
        ref = reg.predict(x[None])[0]
        assert g.shape == (len(x),)
        np.testing.assert_allclose(g, ref, rtol=0, atol=1e-12 * max(1.0, np.abs(ref).max()))
    T = rng.integers(1, 20, size=(50, 8))
    tok = rf.LSTMClassifier(hidden_size=8, embedding_dim=4, epochs=1, random_state=0).fit(T, T[:, 0] % 2)
    ids = [rng.integers(1, 20, size=int(n)) for n in rng.integers(1, 15, size=20)]
    with Batcher(tok, method="predict_proba") as b:
        got = [f.result(timeout=30) for f in _submit_all(b, ids)]
    for x, g in zip(ids, got):
        np.testing.assert_allclose(g, tok.predict_proba(x[None])[0], atol=1e-6)


def test_sequential_and_layers_get_lengths_not_padding(monkeypatch):
    rng = np.random.default_rng(3)
    seq = rf.nn.Sequential(rf.nn.LSTM(3, 8, seed=0), rf.nn.LastStep(), rf.nn.Linear(8, 2, seed=1))
    per_step = rf.nn.Sequential(rf.nn.GRU(3, 8, seed=0), rf.nn.Linear(8, 2, seed=1))
    calls = []
    real = rf.nn.Sequential.forward

    def spy(self, x, lengths=None, n_threads=None):
        calls.append((x.shape, None if lengths is None else list(lengths)))
        return real(self, x, lengths=lengths, n_threads=n_threads)

    monkeypatch.setattr(rf.nn.Sequential, "forward", spy)
    xs = _seqs(24, 3, rng)
    for model in (seq, per_step):
        calls.clear()
        with Batcher(model, max_delay_ms=20) as b:
            got = [f.result(timeout=30) for f in _submit_all(b, xs)]
        batched = [c for c in calls if c[0][0] > 1]
        # one call per batch, with lengths; none only when the batch's requests are all as long
        n_of_length = {T: sum(len(x) == T for x in xs) for T in {len(x) for x in xs}}
        assert batched and all(c[1] is not None or n_of_length.get(c[0][1], 0) >= c[0][0] for c in batched)
        assert all(c[1] is None or max(c[1]) == c[0][1] for c in batched)
        for x, g in zip(xs, got):
            np.testing.assert_allclose(g, real(model.eval(), x[None])[0], rtol=0, atol=1e-6)
    for layer in (rf.nn.LSTM(3, 5, num_layers=2, seed=0), rf.nn.RNN(3, 5, batch_first=False, seed=0)):
        with Batcher(layer) as b:
            got = [f.result(timeout=30) for f in _submit_all(b, xs[:10])]
        for x, (out, state) in zip(xs, got):
            ref_out, ref_state = layer(x)
            np.testing.assert_allclose(out, ref_out, atol=1e-6)
            for s, r in zip(state if isinstance(state, tuple) else (state,),
                            ref_state if isinstance(ref_state, tuple) else (ref_state,)):
                np.testing.assert_allclose(s, r, atol=1e-6)


def test_token_sequential():
    rng = np.random.default_rng(5)
    model = rf.nn.Sequential(rf.nn.Embedding(20, 4, padding_idx=0, seed=0), rf.nn.LSTM(4, 6, seed=1),
                             rf.nn.LastStep(), rf.nn.Linear(6, 2, seed=2)).eval()
    ids = [rng.integers(1, 20, size=int(n)) for n in rng.integers(1, 15, size=16)]
    with Batcher(model) as b:
        got = [f.result(timeout=30) for f in _submit_all(b, ids)]
        assert isinstance(b.submit(np.ones(3)).exception(timeout=30), TypeError)      # floats are not ids
        assert isinstance(b.submit(np.array([3, 25])).exception(timeout=30), ValueError)  # outside the table
    for x, g in zip(ids, got):
        np.testing.assert_allclose(g, model(x[None])[0], rtol=0, atol=1e-6)


def test_a_bad_request_fails_only_its_own_future(classifier):
    rng = np.random.default_rng(4)
    good = _seqs(6, 3, rng)
    bad = [np.ones((5, 4), np.float32), np.full((3, 3), np.nan, np.float32), np.ones((2, 3, 3)), "text"]
    with Batcher(classifier, max_delay_ms=10) as b:
        futures = _submit_all(b, good[:3] + bad + good[3:])
        results = []
        for f in futures:
            try:
                results.append(f.result(timeout=30))
            except Exception as e:  # noqa: BLE001 - the test looks at which
                results.append(e)
    assert [classifier.predict(x[None])[0] for x in good] == results[:3] + results[7:]
    assert all(isinstance(e, (ValueError, TypeError)) for e in results[3:7])
    assert "4 features" in str(results[3]) and "NaN" in str(results[4])


class _Picky:
    """A layer that fails on inputs holding a value above 100 (no check catches that up front); slow on
    request so queues build."""

    keyword_protocol = True
    delay = 0.0

    def eval(self):
        return self

    def forward(self, x, lengths=None, n_threads=None):
        time.sleep(self.delay)
        if np.any(x > 100):
            raise ArithmeticError("too large")
        return x.sum(axis=-1)

    def backward(self, dout, n_threads=None):
        raise NotImplementedError


def test_a_failing_batch_is_retried_one_by_one():
    xs = [np.ones((3, 2)), np.full((2, 2), 500.0), 2 * np.ones((4, 2))]
    with Batcher(_Picky(), max_delay_ms=50) as b:
        futures = [b.submit(x) for x in xs]
        assert isinstance(futures[1].exception(timeout=30), ArithmeticError)
        np.testing.assert_array_equal(futures[0].result(), [2, 2, 2])
        np.testing.assert_array_equal(futures[2].result(), [4, 4, 4, 4])


def test_bounded_queue_close_and_no_thread_leak():
    before = threading.active_count()
    slow = _Picky()
    slow.delay = 0.2
    b = Batcher(slow, max_batch_size=1, max_delay_ms=0, max_queue=2)
    futures = [b.submit(np.ones((2, 2)))]
    time.sleep(0.05)  # the worker has taken the first one
    futures += [b.submit(np.ones((2, 2))) for _ in range(2)]
    with pytest.raises(QueueFullError, match="max_queue"):
        b.submit(np.ones((2, 2)))
    b.close()  # finishes what was submitted
    assert all(f.done() and f.exception() is None for f in futures)
    with pytest.raises(RuntimeError, match="closed"):
        b.submit(np.ones((2, 2)))
    b.close()  # idempotent
    assert not b._threads[0].is_alive()
    for workers in (1, 3, 1):  # a Batcher nobody closes stops (every worker) when it is collected
        threads = Batcher(_Picky(), workers=workers)._threads
        gc.collect()
        for worker in threads:
            worker.join(timeout=10)
            assert not worker.is_alive()
    assert threading.active_count() == before


@pytest.mark.parametrize("method", ["predict", "predict_proba"])
def test_several_workers_run_batches_side_by_side(classifier, method):
    """workers=3: three threads take batches from one queue; every answer is the unbatched one, the counts
    add up, close() finishes what was submitted and joins them all."""
    xs = _seqs(60, 3, np.random.default_rng(7))
    before = threading.active_count()
    b = Batcher(classifier, max_batch_size=4, max_delay_ms=1, method=method, workers=3)
    assert threading.active_count() == before + 3
    futures = _submit_all(b, xs)
    b.close()
    assert all(not t.is_alive() for t in b._threads) and threading.active_count() == before
    for x, f in zip(xs, futures):
        ref = getattr(classifier, method)(x[None])[0]
        if method == "predict":
            assert f.result(timeout=0) == ref
        else:
            np.testing.assert_allclose(f.result(timeout=0), ref, rtol=0, atol=1e-6)
    stats = b.stats
    assert stats["requests"] == 60 and 15 <= stats["batches"] <= 60


def test_parameters_are_checked(classifier):
    with pytest.raises(ValueError, match="max_batch_size"):
        Batcher(classifier, max_batch_size=0)
    with pytest.raises(TypeError, match="max_delay_ms"):
        Batcher(classifier, max_delay_ms="2")
    for workers, error in ((0, ValueError), (65, ValueError), (2.0, TypeError)):
        with pytest.raises(error, match="workers"):
            Batcher(classifier, workers=workers)
    with pytest.raises(ValueError, match="method"):
        Batcher(classifier, method="transform")
    with pytest.raises(ValueError, match="method"):
        Batcher(rf.nn.LSTM(2, 2), method="predict_proba")
    with pytest.raises(rf.estimators.NotFittedError):
        Batcher(rf.LSTMClassifier())
    with pytest.raises(TypeError, match="Batcher needs"):
        Batcher(object())
    with pytest.raises(ValueError, match="batch-first"):
        Batcher(rf.nn.Sequential(rf.nn.GRU(2, 2, batch_first=False)))
    reg = rf.LSTMRegressor(hidden_size=4, epochs=1).fit(np.ones((4, 3, 1)), np.arange(4.0))
    with pytest.raises(ValueError, match="predict_proba"):
        Batcher(reg, method="predict_proba")


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs fork")
def test_a_batcher_from_before_a_fork_refuses_requests():
    import multiprocessing
    ctx = multiprocessing.get_context("fork")
    with Batcher(rf.nn.GRU(2, 3)) as b:
        q = ctx.Queue()
        p = ctx.Process(target=_submit_in_child, args=(b, q))
        p.start()
        p.join(timeout=60)
        assert q.get(timeout=10).startswith("RuntimeError: this Batcher was made before the process forked")
        assert b.submit(np.ones((2, 2))).result(timeout=30)[0].shape == (2, 3)  # the parent's still works


def _submit_in_child(batcher, q):
    try:
        batcher.submit(np.ones((2, 2)))
        q.put("no error")
    except RuntimeError as e:
        q.put(f"RuntimeError: {e}")


def test_a_lone_request_does_not_wait_for_company():
    """max_delay_ms applies once requests come together; one client's requests, one at a time, run at
    once (with a 2 s delay each would take 2 s)."""
    with Batcher(rf.nn.GRU(2, 3), max_delay_ms=2000) as b:
        b.submit(np.ones((2, 2))).result(timeout=30)
        t0 = time.perf_counter()
        for _ in range(3):
            b.submit(np.ones((2, 2))).result(timeout=30)
        assert time.perf_counter() - t0 < 1.5


def test_the_delay_counts_from_the_first_requests_submit():
    """A batch's first request waits for company up to max_delay_ms after it was submitted, not after the
    worker took it: requests that queued while the previous batch ran go at once (under a steady load a
    fixed wait after every batch would cap the throughput), a fresh one still gathers what comes."""
    from rnnfast.serving import _collect, _Inbox
    inbox = _Inbox()
    old = time.monotonic() - 1.0
    for _ in range(3):
        inbox.put((np.ones(2), None, old))
    t0 = time.perf_counter()
    batch, stop = _collect(inbox, 32, 0.5)
    assert len(batch) == 3 and not stop and time.perf_counter() - t0 < 0.3

    late = threading.Timer(0.05, lambda: inbox.put((np.ones(2), None, time.monotonic())))
    late.start()
    inbox.put((np.ones(2), None, time.monotonic()))
    t0 = time.perf_counter()
    batch, _ = _collect(inbox, 32, 0.3)
    late.join()
    assert len(batch) == 2 and time.perf_counter() - t0 >= 0.25


def test_requests_already_queued_go_without_waiting():
    """When the worker is free and finds requests queued behind the first, even fresh ones, it runs them at
    once instead of waiting max_delay_ms for more (they queued while it was busy: it is the bottleneck)."""
    from rnnfast.serving import _collect, _Inbox
    inbox = _Inbox()
    for _ in range(3):
        inbox.put((np.ones(2), None, time.monotonic()))
    t0 = time.perf_counter()
    batch, stop = _collect(inbox, 32, 5.0)
    assert len(batch) == 3 and not stop and time.perf_counter() - t0 < 1.0
    for _ in range(6):
        inbox.put((np.ones(2), None, time.monotonic()))
    batch, _ = _collect(inbox, 4, 5.0)
    assert len(batch) == 4 and len(inbox) == 2  # max_batch_size still caps it


def test_a_waiting_worker_wakes_for_a_request_and_every_worker_for_the_stop_marker():
    """A worker sleeps only on an empty inbox and is woken by the next request; the stop marker stays at
    the front for every worker, the requests queued before it are still taken, those behind it cancelled."""
    from concurrent.futures import Future

    from rnnfast.serving import _STOP, _collect, _Inbox
    inbox = _Inbox()
    got = []
    taker = threading.Thread(target=lambda: got.append(_collect(inbox, 8, 0.0)))
    taker.start()
    time.sleep(0.05)
    assert taker.is_alive() and inbox.needs == [1]
    inbox.put((np.ones(2), None, time.monotonic()))
    taker.join(timeout=10)
    assert len(got[0][0]) == 1 and not got[0][1]
    takers = [threading.Thread(target=lambda: got.append(_collect(inbox, 8, 0.0))) for _ in range(3)]
    for t in takers:
        t.start()
    time.sleep(0.05)
    inbox.put(_STOP)
    for t in takers:
        t.join(timeout=10)
        assert not t.is_alive()
    assert [len(b) for b, stop in got[1:]] == [0, 0, 0] and all(stop for _, stop in got[1:])
    late = Future()
    inbox.put((np.ones(2), late, time.monotonic()))
    before = (np.ones(2), None, 0.0)
    inbox.items.appendleft(before)  # queued before the marker
    batch, stop = _collect(inbox, 8, 0.0)
    assert batch == [before] and stop
    inbox.cancel_rest()
    assert late.cancelled() and list(inbox.items) == [_STOP]
    routed, later = [], Future()
    inbox.put((np.ones(2), later, time.monotonic()))
    inbox.cancel_rest(lambda fn, arg: routed.append((fn, arg)))  # cancelled where settle_with settles
    assert not later.cancelled() and routed[0][1] == [later]
    routed[0][0](routed[0][1])
    assert later.cancelled()


def test_a_gathering_worker_sleeps_until_enough_requests_came():
    """A batch whose first request was found alone waits for a full batch (not woken by each arrival) or
    until the deadline."""
    from rnnfast.serving import _collect, _Inbox
    inbox = _Inbox()
    wakes = []
    real_wait = inbox.cond.wait

    def counting_wait(timeout=None):
        wakes.append(timeout)
        return real_wait(timeout)

    inbox.cond.wait = counting_wait
    inbox.put((np.ones(2), None, time.monotonic()))

    def feed():
        for _ in range(5):
            time.sleep(0.01)
            inbox.put((np.ones(2), None, time.monotonic()))

    feeder = threading.Thread(target=feed)
    feeder.start()
    t0 = time.perf_counter()
    batch, stop = _collect(inbox, 4, 5.0)
    feeder.join()
    assert len(batch) == 4 and not stop and time.perf_counter() - t0 < 2.0
    assert len(wakes) == 1  # one sleep, woken when the fourth request came
    assert len(inbox) == 2
    batch, _ = _collect(inbox, 8, 0.05)  # two waiting: taken at once, no wait for more
    assert len(batch) == 2
    inbox.put((np.ones(2), None, time.monotonic()))
    t0 = time.perf_counter()
    batch, _ = _collect(inbox, 8, 0.1)  # alone: waits until the deadline
    assert len(batch) == 1 and time.perf_counter() - t0 >= 0.09


def test_futures_can_be_settled_on_another_thread_once_per_batch(classifier):
    """settle_with (an event loop's call_soon_threadsafe): each batch's futures are settled by one call of
    it, on the thread it hands them to; when it raises, on the worker thread. A bad one is refused."""
    import asyncio
    loop = asyncio.new_event_loop()
    runner = threading.Thread(target=loop.run_forever)
    runner.start()
    settled_on, calls = [], []

    def via_loop(fn, arg):
        calls.append(len(arg))
        loop.call_soon_threadsafe(fn, arg)

    xs = _seqs(30, 3, np.random.default_rng(8))
    try:
        with Batcher(classifier, max_delay_ms=20, settle_with=via_loop) as b:
            futures = _submit_all(b, xs)
            for f in futures:
                f.add_done_callback(lambda f: settled_on.append(threading.get_ident()))
            got = [f.result(timeout=30) for f in futures]
            stats = b.stats
    finally:
        loop.call_soon_threadsafe(loop.stop)
        runner.join()
        loop.close()
    assert got == [classifier.predict(x[None])[0] for x in xs]
    assert sum(calls) == 30 and len(calls) == stats["batches"] < 30
    assert set(settled_on) <= {runner.ident, threading.get_ident()}  # the loop's (or here, if already done)

    def closed(fn, arg):
        raise RuntimeError("Event loop is closed")

    with Batcher(classifier, settle_with=closed) as b:
        assert b.predict(xs[0], timeout=30) == got[0]
    with pytest.raises(TypeError, match="settle_with"):
        Batcher(classifier, settle_with=3)


def test_a_refit_estimator_is_served_with_its_new_network():
    """The Batcher keeps one predict loop per network: after a refit it answers with the new one."""
    rng = np.random.default_rng(5)
    X = rng.standard_normal((30, 6, 3)).astype(np.float32)
    est = rf.LSTMRegressor(hidden_size=4, epochs=1, random_state=0).fit(X, X[:, :, 0].sum(1))
    x = X[0]
    with Batcher(est, method="predict") as b:
        before = b.predict(x, timeout=30)
        est.set_params(random_state=1).fit(X, -X[:, :, 1].sum(1))
        after = b.predict(x, timeout=30)
    np.testing.assert_allclose(after, est.predict(x[None])[0], rtol=0, atol=1e-6)
    assert not np.allclose(before, after)


def test_a_mostly_idle_worker_does_not_wait_for_company():
    """Pairs of requests now and then (a load under capacity): the worker is idle most of the time, so
    a request found alone runs at once even though the last batch held two (a 2 s max_delay_ms would
    otherwise cost 2 s a pair)."""
    from rnnfast.serving import _Load
    load = _Load()
    load.add(2, elapsed=0.1, run=0.001)
    assert not load.together()  # came together, but the worker is idle
    for _ in range(20):
        load.add(8, elapsed=0.012, run=0.005)
    assert not load.together()  # busy 42%: a request found alone goes at once
    for _ in range(20):
        load.add(8, elapsed=0.008, run=0.005)
    assert load.together()  # busy 62% and batching: wait for company
    load.add(1, elapsed=0.001, run=0.001)
    assert not load.together()  # a lone request last: it does not wait

    with Batcher(rf.nn.GRU(2, 3), max_delay_ms=2000) as b:
        t0 = time.perf_counter()
        for _ in range(3):
            futures = [b.submit(np.ones((2, 2))) for _ in range(2)]  # usually one batch of two
            for f in futures:
                f.result(timeout=30)
            time.sleep(0.1)
            b.submit(np.ones((2, 2))).result(timeout=30)  # then one alone
        assert time.perf_counter() - t0 < 1.5
