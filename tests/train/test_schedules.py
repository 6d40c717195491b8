"""Learning-rate schedules against torch.optim.lr_scheduler, epoch by epoch."""
import numpy as np
import pytest

from rnnfast.nn import Linear
from rnnfast.train import SGD, CosineAnnealingLR, ExponentialLR, ReduceLROnPlateau, StepLR


def optimizer(lr=0.1):
    return SGD(Linear(2, 1), lr=lr)


def test_by_hand():
    opt = optimizer(1.0)
    s = StepLR(opt, step_size=2, gamma=0.5)
    assert [s.step() for _ in range(5)] == [1.0, 0.5, 0.5, 0.25, 0.25]
    opt = optimizer(1.0)
    s = CosineAnnealingLR(opt, T_max=4, eta_min=0.1)
    lrs = [s.step() for _ in range(8)]
    expect = [0.1 + 0.9 * (1 + np.cos(np.pi * t / 4)) / 2 for t in range(1, 9)]
    np.testing.assert_allclose(lrs, expect, rtol=1e-12)
    opt = optimizer(1.0)
    s = ExponentialLR(opt, 0.9)
    s.step(), s.step()
    assert opt.lr == pytest.approx(0.81) and s.get_last_lr() == opt.lr


SCHEDULES = [
    ("StepLR", dict(step_size=3, gamma=0.3)),
    ("ExponentialLR", dict(gamma=0.85)),
    ("CosineAnnealingLR", dict(T_max=7, eta_min=0.001)),
    ("CosineAnnealingLR", dict(T_max=1)),
]


@pytest.mark.parametrize("name, kw", SCHEDULES)
def test_matches_torch(name, kw):
    torch = pytest.importorskip("torch")
    import rnnfast.train as rt

    opt = optimizer(0.2)
    sched = getattr(rt, name)(opt, **kw)
    topt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.2)
    tsched = getattr(torch.optim.lr_scheduler, name)(topt, **kw)
    for epoch in range(25):
        topt.step()
        tsched.step()
        sched.step()
        assert opt.lr == tsched.get_last_lr()[0], f"epoch {epoch + 1}"


METRICS = [0.9, 0.8, 0.8, 0.81, 0.79, 0.8, 0.8, 0.8, 0.8, 0.5, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6]


@pytest.mark.parametrize("kw", [dict(), dict(patience=1), dict(patience=0, cooldown=2, factor=0.5, min_lr=0.01),
                                dict(mode="max", patience=2, threshold=0.1, threshold_mode="abs"),
                                dict(mode="max", patience=1, threshold_mode="rel")])
def test_plateau_matches_torch(kw):
    torch = pytest.importorskip("torch")
    opt = optimizer(0.2)
    sched = ReduceLROnPlateau(opt, **kw)
    topt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.2)
    tsched = torch.optim.lr_scheduler.ReduceLROnPlateau(topt, **kw)
    for epoch, m in enumerate(METRICS):
        tsched.step(m)
        sched.step(m)
        assert opt.lr == topt.param_groups[0]["lr"], f"epoch {epoch + 1}"
    if kw:  # (the defaults' patience of 10 is never exhausted by these metrics)
        assert opt.lr < 0.2


def test_state_dict_roundtrip_and_errors():
    opt = optimizer(1.0)
    s = CosineAnnealingLR(opt, T_max=10)
    for _ in range(3):
        s.step()
    sd = s.state_dict()
    assert sd == {"T_max": 10, "eta_min": 0.0, "base_lr": 1.0, "last_epoch": 3}
    opt2 = optimizer(opt.lr)
    s2 = CosineAnnealingLR(opt2, T_max=5)
    s2.load_state_dict(sd)
    assert s2.step() == s.step()
    p = ReduceLROnPlateau(optimizer())
    p.step(1.0)
    p2 = ReduceLROnPlateau(optimizer())
    p2.load_state_dict(p.state_dict())
    assert p2.best == 1.0 and p2.last_epoch == 1
    with pytest.raises(ValueError, match="keys"):
        s2.load_state_dict({"T_max": 3})
    with pytest.raises(TypeError, match="T_max"):
        s2.load_state_dict({**sd, "T_max": 2.5})
    with pytest.raises(ValueError, match="mode"):
        p2.load_state_dict({**p.state_dict(), "mode": "median"})
    with pytest.raises(ValueError, match="step_size"):
        StepLR(opt, step_size=0)
    with pytest.raises(ValueError, match="factor"):
        ReduceLROnPlateau(opt, factor=1.0)
    with pytest.raises(ValueError, match="mode"):
        ReduceLROnPlateau(opt, mode="median")
    with pytest.raises(TypeError, match="lr"):
        StepLR(object(), step_size=1)
    with pytest.raises(TypeError, match="metric"):
        p.step("low")
