"""Optimizers: hand-computed steps, step-by-step agreement with torch.optim, state dicts, bad input."""
import math

import numpy as np
import pytest

from rnnfast.nn import Linear
from rnnfast.train import SGD, Adagrad, Adam, AdamW, RMSprop, parameter_triples
from rnnfast.train.optimizers import Optimizer


def one_param(p, g, dtype=np.float64):
    return [("w", np.array(p, dtype), np.array(g, dtype))]


# ---------------------------------------------------------------------------------------- by hand
def test_sgd_by_hand():
    params = one_param([1.0, -2.0], [0.5, 1.0])
    opt = SGD(params, lr=0.1, momentum=0.9, weight_decay=0.01)
    p, g = params[0][1], params[0][2]
    opt.step()  # g' = g + 0.01 p = [0.51, 0.98]; buffer starts at g'
    np.testing.assert_allclose(p, [1 - 0.051, -2 - 0.098])
    opt.step()  # g' = g + 0.01 p; b = 0.9 b + g'
    g2 = np.array([0.5, 1.0]) + 0.01 * np.array([0.949, -2.098])
    b = 0.9 * np.array([0.51, 0.98]) + g2
    np.testing.assert_allclose(p, np.array([0.949, -2.098]) - 0.1 * b)
    np.testing.assert_array_equal(g, [0.5, 1.0])  # the gradient arrays are never modified


def test_nesterov_by_hand():
    params = one_param([1.0], [2.0])
    opt = SGD(params, lr=0.5, momentum=0.5, nesterov=True)
    opt.step()  # b = 2; step g + 0.5 b = 3
    np.testing.assert_allclose(params[0][1], [1 - 1.5])
    opt.step()  # b = 0.5*2 + 2 = 3; step 2 + 1.5 = 3.5
    np.testing.assert_allclose(params[0][1], [-0.5 - 1.75])


def test_adam_and_adamw_by_hand():
    params = one_param([1.0, -1.0], [0.2, -3.0])
    opt = Adam(params, lr=0.01)
    opt.step()
    # first step: m_hat = g, v_hat = g^2, so the step is lr * g / (|g| + eps')
    eps_eff = 1e-8  # eps is added after the bias correction of sqrt(v)
    g = np.array([0.2, -3.0])
    np.testing.assert_allclose(params[0][1], np.array([1.0, -1.0]) - 0.01 * g / (np.abs(g) + eps_eff), rtol=1e-15)
    params = one_param([1.0], [0.0])
    AdamW(params, lr=0.1, weight_decay=0.5).step()  # decoupled decay only: p * (1 - 0.05)
    np.testing.assert_allclose(params[0][1], [0.95])
    params = one_param([1.0], [0.0])
    Adam(params, lr=0.1, weight_decay=0.5).step()  # coupled: g = 0.5, step ~ lr * sign(g)
    np.testing.assert_allclose(params[0][1], [0.9], rtol=1e-7)


def test_rmsprop_and_adagrad_by_hand():
    params = one_param([1.0], [2.0])
    RMSprop(params, lr=0.1, alpha=0.9, eps=0.0).step()  # s = 0.1*4; p -= 0.1*2/sqrt(0.4)
    np.testing.assert_allclose(params[0][1], [1 - 0.2 / math.sqrt(0.4)])
    params = one_param([1.0], [2.0])
    opt = Adagrad(params, lr=0.1, lr_decay=1.0, eps=0.0, initial_accumulator_value=5.0)
    opt.step()  # s = 9; p -= 0.1 * 2/3
    opt.step()  # s = 13; clr = 0.1/2; p -= 0.05 * 2/sqrt(13)
    np.testing.assert_allclose(params[0][1], [1 - 0.2 / 3 - 0.1 / math.sqrt(13)])


# ---------------------------------------------------------------------------------------- torch
CONFIGS = [
    (SGD, "SGD", dict(lr=0.1)),
    (SGD, "SGD", dict(lr=0.1, momentum=0.9, dampening=0.1, weight_decay=0.01)),
    (SGD, "SGD", dict(lr=0.05, momentum=0.8, nesterov=True, weight_decay=0.1)),
    (RMSprop, "RMSprop", dict(lr=0.01)),
    (RMSprop, "RMSprop", dict(lr=0.01, alpha=0.9, momentum=0.5, centered=True, weight_decay=0.01)),
    (Adagrad, "Adagrad", dict(lr=0.1, lr_decay=0.01, weight_decay=0.01, initial_accumulator_value=0.1)),
    (Adam, "Adam", dict(lr=0.01)),
    (Adam, "Adam", dict(lr=0.01, betas=(0.8, 0.99), weight_decay=0.1, amsgrad=True)),
    (AdamW, "AdamW", dict(lr=0.01)),
    (AdamW, "AdamW", dict(lr=0.02, weight_decay=0.1, amsgrad=True, eps=1e-6)),
]


@pytest.mark.parametrize("cls, tname, kw", CONFIGS, ids=[f"{c[1]}-{i}" for i, c in enumerate(CONFIGS)])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_matches_torch(cls, tname, kw, dtype):
    torch = pytest.importorskip("torch")
    r = np.random.default_rng(0)
    shapes = {"a": (3, 2), "b": (4,)}
    params = {n: r.standard_normal(s).astype(dtype) for n, s in shapes.items()}
    grads = {n: np.zeros(s, dtype) for n, s in shapes.items()}
    tparams = {n: torch.tensor(p.copy(), requires_grad=True) for n, p in params.items()}
    opt = cls([(n, params[n], grads[n]) for n in shapes], **kw)
    topt = getattr(torch.optim, tname)(list(tparams.values()), foreach=False, **kw)
    for step in range(6):
        if step == 3:
            opt.lr = topt.param_groups[0]["lr"] = kw["lr"] / 2  # a schedule's change is honoured
        for n in shapes:
            g = r.standard_normal(shapes[n]).astype(dtype)
            grads[n][...] = g
            tparams[n].grad = torch.from_numpy(g.copy())
        opt.step()
        topt.step()
        tol = dict(rtol=1e-13, atol=1e-15) if dtype == np.float64 else dict(rtol=2e-6, atol=1e-7)
        for n in shapes:
            np.testing.assert_allclose(params[n], tparams[n].detach().numpy(), err_msg=f"step {step} {n}", **tol)
    # the moments too, under PyTorch's names
    tstate = topt.state[tparams["a"]]
    for k, v in opt.state["a"].items():
        np.testing.assert_allclose(v, tstate[k].numpy(), rtol=1e-5 if dtype == np.float32 else 1e-12, atol=1e-12)


# ---------------------------------------------------------------------------------------- API
def test_model_params_state_dict_roundtrip():
    lin_a, lin_b = Linear(3, 2, dtype=np.float64, seed=0), Linear(3, 2, dtype=np.float64, seed=0)
    opt_a = Adam(lin_a, lr=0.05, amsgrad=True)
    opt_b = Adam(lin_b, lr=0.05, amsgrad=True)
    r = np.random.default_rng(1)
    for _ in range(3):
        g = r.standard_normal((2, 3))
        lin_a.grads["weight"][...] = lin_b.grads["weight"][...] = g
        opt_a.step()
        opt_b.step()
    sd = opt_a.state_dict()
    assert sd["optimizer"] == "Adam" and sd["steps"] == 3 and set(sd["state"]) == {"weight", "bias"}
    assert set(sd["state"]["weight"]) == {"exp_avg", "exp_avg_sq", "max_exp_avg_sq"}
    lin_c = Linear(3, 2, dtype=np.float64)
    lin_c.load_state_dict(lin_a.state_dict())
    opt_c = Adam(lin_c, lr=1.0)
    opt_c.load_state_dict(sd)
    assert opt_c.lr == 0.05 and opt_c.steps == 3
    sd["state"]["weight"]["exp_avg"][...] = 99  # the optimizer holds copies
    assert not np.any(opt_c.state["weight"]["exp_avg"] == 99)
    g = r.standard_normal((2, 3))
    for lin, opt in ((lin_b, opt_b), (lin_c, opt_c)):
        lin.grads["weight"][...] = g
        opt.step()
    np.testing.assert_array_equal(lin_c.state_dict()["weight"], lin_b.state_dict()["weight"])


def test_load_state_dict_refuses_mismatches():
    lin = Linear(3, 2)
    opt = SGD(lin, lr=0.1, momentum=0.9)
    good = opt.state_dict()
    with pytest.raises(ValueError, match="'Adam'"):
        opt.load_state_dict({**good, "optimizer": "Adam"})
    with pytest.raises(ValueError, match="parameter names"):
        opt.load_state_dict({**good, "state": {"weight": good["state"]["weight"]}})
    bad_state = {k: dict(v) for k, v in good["state"].items()}
    bad_state["bias"]["momentum_buffer"] = np.zeros(5)
    with pytest.raises(ValueError, match="shape"):
        opt.load_state_dict({**good, "state": bad_state})
    with pytest.raises(ValueError, match="lr"):
        opt.load_state_dict({**good, "hyper": {**good["hyper"], "lr": -1.0}})
    with pytest.raises(ValueError, match="momentum_buffer"):
        opt.load_state_dict({**good, "hyper": {**good["hyper"], "momentum": 0.0}})
    assert opt.lr == 0.1 and opt.momentum == 0.9


def test_zero_grad_and_param_validation():
    lin = Linear(2, 2)
    lin.grads["weight"][...] = 1
    opt = SGD(lin)
    opt.zero_grad()
    assert not np.any(lin.grads["weight"])
    assert [n for n, _, _ in parameter_triples(lin)] == ["weight", "bias"]
    with pytest.raises(ValueError, match="empty"):
        SGD([])
    with pytest.raises(TypeError, match="triple"):
        SGD([(np.zeros(2), np.zeros(2))])
    with pytest.raises(TypeError, match="numpy array"):
        SGD([("w", [1.0, 2.0], np.zeros(2))])
    with pytest.raises(ValueError, match="shape"):
        SGD([("w", np.zeros(2), np.zeros(3))])
    with pytest.raises(ValueError, match="duplicate"):
        SGD([("w", np.zeros(2), np.zeros(2)), ("w", np.zeros(2), np.zeros(2))])
    ro = np.zeros(2)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        SGD([("w", ro, np.zeros(2))])


@pytest.mark.parametrize("cls, kw, match", [
    (SGD, dict(lr=-0.1), "lr"),
    (SGD, dict(momentum=0.0, nesterov=True), "Nesterov"),
    (SGD, dict(lr="fast"), "lr must be a number"),
    (Adam, dict(betas=(0.9, 1.0)), r"betas\[1\]"),
    (Adam, dict(betas=0.9), "pair"),
    (Adam, dict(amsgrad=1), "amsgrad must be a bool"),
    (RMSprop, dict(alpha=1.5), "alpha"),
    (Adagrad, dict(eps=-1.0), "eps"),
])
def test_bad_hyperparameters(cls, kw, match):
    with pytest.raises((ValueError, TypeError), match=match):
        cls(Linear(2, 2), **kw)
    opt = SGD(Linear(2, 2))
    with pytest.raises(ValueError, match="lr"):
        opt.lr = float("nan")


def test_training_a_small_model_reduces_the_loss():
    """The pieces together: Sequential + CrossEntropy + clipping + Adam + a schedule, on padded sequences."""
    import rnnfast as rf
    from rnnfast.train import CrossEntropy, StepLR, accuracy, clip_grad_norm

    r = np.random.default_rng(0)
    lengths = r.integers(1, 7, 16)
    ids = r.integers(1, 9, (16, 6)) * (np.arange(6)[None] < lengths[:, None])
    y = (ids == 3).any(axis=1).astype(int)  # does token 3 occur?
    model = rf.Sequential(rf.nn.Embedding(9, 4, padding_idx=0, seed=0), rf.nn.LSTM(4, 8, seed=1),
                          rf.nn.LastStep(), rf.nn.Linear(8, 2, seed=2))
    opt = Adam(model, lr=0.05)
    sched = StepLR(opt, step_size=20, gamma=0.5)
    loss_fn = CrossEntropy()
    losses = []
    for _ in range(60):
        model.zero_grad()
        loss, d = loss_fn(model(ids, lengths=lengths), y)
        model.backward(d)
        clip_grad_norm(model, 5.0)
        opt.step()
        sched.step()
        losses.append(loss)
    assert losses[-1] < 0.5 * losses[0]
    assert accuracy(y, model.eval()(ids, lengths=lengths).argmax(-1)) == 1.0


def test_adam_flushes_subnormal_moments():
    import rnnfast.train.optimizers as O

    p = np.ones(4, np.float32)
    g = np.zeros(4, np.float32)
    opt = O.Adam([("w", p, g)], lr=1e-3)
    g[:] = 1.0
    opt.step()
    g[:] = 0.0
    steps = 14 * O._FLUSH_EVERY  # the first moment is 0.1 * 0.9**(steps - 1): subnormal in float32 here
    assert 0 < 0.1 * 0.9 ** (steps - 1) < np.finfo(np.float32).tiny
    for _ in range(steps - 1):
        opt.step()
    assert np.all(opt.state["w"]["exp_avg"] == 0)
    assert np.all(opt.state["w"]["exp_avg_sq"] > 0)  # v is still normal: left as it is


def test_adam_scratch_is_reused_and_never_pickled():
    """Adam works in two arrays per parameter shape kept between steps (no temporaries: a large
    parameter's temporaries cost page zeroing at every step); they are not optimizer state."""
    import pickle

    from rnnfast.train.optimizers import Adam

    rng = np.random.default_rng(0)
    p, g = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    opt = Adam([("w", p, g)], lr=0.1)
    Optimizer.step(opt)  # the numpy passes (Adam.step runs them for arrays the kernel does not take)
    first = [id(a) for a in opt._tmp[((3, 4), p.dtype.str)]]
    Optimizer.step(opt)
    assert [id(a) for a in opt._tmp[((3, 4), p.dtype.str)]] == first
    back = pickle.loads(pickle.dumps(opt))
    assert not hasattr(back, "_tmp")
    q = p.copy()
    back.params = [("w", q, g)]
    Optimizer.step(back)
    Optimizer.step(opt)
    np.testing.assert_array_equal(q, p)


# ---------------------------------------------------------------------------------------- one-pass kernel
ADAM_KERNEL_CASES = [
    (Adam, dict(lr=0.01)),
    (Adam, dict(lr=0.003, betas=(0.3, 0.99), eps=1e-6)),  # lerp weight 0.7: torch.lerp's other formula
    (Adam, dict(lr=0.01, betas=(0.8, 0.99), weight_decay=0.1, amsgrad=True)),
    (AdamW, dict(lr=0.01)),
    (AdamW, dict(lr=0.02, weight_decay=0.1, amsgrad=True, eps=1e-6)),
]


def _adam_kernel_pair(cls, kw, dtype, sizes):
    """(kernel optimizer, its params, numpy-pass optimizer, its params, gradients), equal starts."""
    r = np.random.default_rng(1)
    params = [r.standard_normal(n).astype(dtype) for n in sizes]
    copies = [p.copy() for p in params]
    grads = [np.zeros(n, dtype) for n in sizes]
    kern = cls([(f"p{i}", p, g) for i, (p, g) in enumerate(zip(params, grads))], **kw)
    ref = cls([(f"p{i}", p, g) for i, (p, g) in enumerate(zip(copies, grads))], **kw)
    return kern, params, ref, copies, grads


@pytest.mark.parametrize("cls, kw", ADAM_KERNEL_CASES, ids=[f"{c.__name__}-{i}" for i, (c, _) in
                                                            enumerate(ADAM_KERNEL_CASES)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_adam_kernel_equals_the_numpy_passes_bit_for_bit(cls, kw, dtype):
    """The compiled one-pass Adam (threaded over large arrays) rounds every element as the numpy passes
    of Adam._update do: same parameters and moments, bit for bit, over steps that cross a subnormal flush
    (step 64), with gradients holding zeros, subnormal and huge values, and a learning-rate change."""
    import rnnfast.train.optimizers as O
    kern, params, ref, copies, grads = _adam_kernel_pair(cls, kw, dtype, (5, 70001, 40000))
    r = np.random.default_rng(2)
    tiny = np.finfo(dtype).tiny
    for step in range(O._FLUSH_EVERY + 3):
        if step == 10:
            kern.lr = ref.lr = kw["lr"] / 3
        for g in grads:
            g[...] = r.standard_normal(g.shape) * (1e-3 if step % 7 else 1e3)
            g[::11] = 0
            g[1::13] = tiny * r.uniform(-0.9, 0.9, g[1::13].shape)  # subnormal gradients
        kern.step()
        Optimizer.step(ref)
    assert kern.steps == ref.steps == O._FLUSH_EVERY + 3
    for i, (p, q) in enumerate(zip(params, copies)):
        np.testing.assert_array_equal(p, q, err_msg=f"parameter {i}")
        for k in kern.state[f"p{i}"]:
            np.testing.assert_array_equal(kern.state[f"p{i}"][k], ref.state[f"p{i}"][k], err_msg=f"{k} of {i}")
    assert kern.state_dict()["state"].keys() == ref.state_dict()["state"].keys()


def test_adam_kernel_nan_and_threads():
    """A NaN gradient spreads as in numpy (amsgrad's maximum keeps it); the result does not depend on the
    thread count; arrays the kernel does not take (a non-contiguous view, a float64 gradient of a float32
    parameter) go through the numpy passes."""
    import rnnfast as rf
    kern, params, ref, copies, grads = _adam_kernel_pair(Adam, dict(lr=0.01, amsgrad=True), np.float32,
                                                         (50000, 3))
    grads[0][...] = 1.0
    grads[0][7] = np.nan
    kern.step()
    Optimizer.step(ref)
    kern.step()
    Optimizer.step(ref)
    assert np.isnan(params[0][7]) and np.isnan(kern.state["p0"]["max_exp_avg_sq"][7])
    np.testing.assert_array_equal(params[0], copies[0])
    old = rf.get_num_threads()
    try:
        out = []
        for n in (1, 2):
            rf.set_num_threads(n)
            p, g = np.linspace(-1, 1, 90000, dtype=np.float32), np.linspace(2, -3, 90000, dtype=np.float32)
            opt = AdamW([("w", p, g)], lr=0.1)
            for _ in range(3):
                opt.step()
            out.append(p)
        np.testing.assert_array_equal(out[0], out[1])
    finally:
        rf.set_num_threads(old)
    big = np.ones((6, 4), np.float32)
    view, g64 = big[:, ::2], np.full((6, 2), 0.5)
    same, g32 = np.ones((6, 2), np.float32), np.full((6, 2), 0.5, np.float32)
    a, b = Adam([("v", view, g64)], lr=0.1), Adam([("v", same, g32)], lr=0.1)
    a.step()
    Optimizer.step(b)
    np.testing.assert_array_equal(view, same)
    assert np.all(big[:, 1::2] == 1)
