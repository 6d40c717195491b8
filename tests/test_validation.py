"""rnnfast._validation: one policy, TypeError for a wrong type and ValueError for a bad value."""
import math

import numpy as np
import pytest

from rnnfast import _validation as v
from rnnfast.nn import module


@pytest.mark.parametrize("value, minimum, maximum, expected", [(3, 1, None, 3), (np.int64(5), 0, 9, 5), (0, 0, 0, 0)])
def test_check_int_accepts(value, minimum, maximum, expected):
    out = v.check_int(value, "n", minimum, maximum)
    assert out == expected and type(out) is int


@pytest.mark.parametrize("value", [1.0, "3", True, np.bool_(True), None, [1]])
def test_check_int_wrong_type_is_type_error(value):
    with pytest.raises(TypeError, match="n must be an int"):
        v.check_int(value, "n", 0)


@pytest.mark.parametrize("value, match", [(0, r"n must be >= 1, got 0"), (11, r"n must be in \[1, 10\]")])
def test_check_int_bad_value_is_value_error(value, match):
    with pytest.raises(ValueError, match=match):
        v.check_int(value, "n", 1, 10 if value > 10 else None)


def test_allow_none():
    assert v.check_int(None, "n", 1, allow_none=True) is None
    assert v.check_real(None, "x", allow_none=True) is None
    with pytest.raises(TypeError, match="or None"):
        v.check_int("a", "n", 1, allow_none=True)


@pytest.mark.parametrize("closed, ok, bad", [
    ("both", [0.0, 1.0], [-0.1, 1.1]), ("left", [0.0, 0.5], [1.0]), ("right", [1.0], [0.0]),
    ("neither", [0.5], [0.0, 1.0]),
])
def test_check_real_intervals(closed, ok, bad):
    for x in ok:
        assert v.check_real(x, "p", 0.0, 1.0, closed=closed) == x
    for x in bad:
        with pytest.raises(ValueError, match="p must be a number in"):
            v.check_real(x, "p", 0.0, 1.0, closed=closed)


def test_check_real_refuses_nan_and_bools_and_strings():
    with pytest.raises(ValueError):
        v.check_real(math.nan, "p")
    for bad in (True, "0.5", None):
        with pytest.raises(TypeError):
            v.check_real(bad, "p")
    assert v.check_real(2, "p") == 2.0 and type(v.check_real(np.float32(0.5), "p")) is float


def test_check_bool_and_option():
    assert v.check_bool(np.bool_(True), "b") is True
    with pytest.raises(TypeError, match=r"b must be a bool \(True or False\)"):
        v.check_bool(1, "b")
    assert v.check_option("mean", "pooling", ("last", "mean")) == "mean"
    with pytest.raises(ValueError, match=r"pooling must be one of \['last', 'mean'\]"):
        v.check_option("avg", "pooling", ("last", "mean"))
    with pytest.raises(TypeError, match="pooling must be one of"):
        v.check_option(3, "pooling", ("last", "mean"))


def test_float_dtype_policy():
    assert v.check_float_dtype("float32") == np.float32 and v.check_float_dtype(np.float64) == np.float64
    with pytest.raises(TypeError):
        v.check_float_dtype("nonsense")
    with pytest.raises(v.UnsupportedDtypeError) as info:
        v.check_float_dtype(np.int32)
    assert isinstance(info.value, TypeError) and isinstance(info.value, ValueError)


def test_any_of_takes_the_first_constraint_of_the_right_type():
    c = v.AnyOf(v.Options("auto"), v.Boolean())
    assert c.check("auto", "r") == "auto" and c.check(np.bool_(False), "r") is False
    with pytest.raises(ValueError, match="r must be one of"):
        c.check("yes", "r")
    with pytest.raises(TypeError, match=r"r must be one of \['auto'\] or a bool \(True or False\)"):
        c.check(3, "r")


def test_validate_params_table():
    table = {"n": v.Integer(1), "p": v.Real(0, 1), "mode": v.Options("a", "b")}
    assert v.validate_params({"n": np.int8(2), "p": 1, "mode": "b"}, table) == {"n": 2, "p": 1.0, "mode": "b"}
    with pytest.raises(ValueError, match="unknown parameters \\['q'\\]"):
        v.validate_params({"q": 1}, table)
    with pytest.raises(TypeError, match="n must be an int"):
        v.validate_params({"n": 1.5}, table)


def test_nn_module_helpers_delegate():
    assert module.check_int(3, "x", 1) == 3
    with pytest.raises(TypeError):
        module.check_int(2.0, "x", 1)
    with pytest.raises(ValueError):
        module.check_int(0, "x", 1)
    with pytest.raises(TypeError, match="dtype must be float32 or float64"):
        module.check_float_dtype(np.int32)


def test_real_messages_name_the_range():
    for kw, value, match in [({"low": 0.0}, -1.0, r"x must be a number >= 0.0, got -1.0"),
                             ({"low": 0.0, "closed": "right"}, 0.0, r"x must be a number > 0.0, got 0.0"),
                             ({"low": 0.0, "closed": "neither"}, math.inf, r"x must be a finite number > 0.0, got inf"),
                             ({}, math.nan, r"x must be a number, not NaN, got nan"),
                             ({"low": 0.0, "high": 1.0, "closed": "left"}, 1.0, r"x must be a number in \[0.0, 1.0\)")]:
        with pytest.raises(ValueError, match=match):
            v.check_real(value, "x", **kw)


def test_allow_nan_passes_nan_and_still_checks_the_rest():
    assert math.isnan(v.check_real(math.nan, "m", 0.0, allow_nan=True))
    with pytest.raises(ValueError):
        v.check_real(-1.0, "m", 0.0, allow_nan=True)
    with pytest.raises(TypeError):
        v.check_real("nan", "m", allow_nan=True)


def test_instance_of():
    c = v.InstanceOf(np.random.Generator, description="a numpy Generator")
    g = np.random.default_rng(0)
    assert c.check(g, "rng") is g
    with pytest.raises(TypeError, match="rng must be a numpy Generator, got int 3"):
        c.check(3, "rng")


def test_pair_checks_each_item_under_its_own_name():
    c = v.Pair(v.Real(0.0, 1.0, closed="left"), v.Integer(1))
    assert c.check([0.5, np.int64(2)], "p") == (0.5, 2)
    with pytest.raises(ValueError, match=r"p\[0\] must be a number in \[0.0, 1.0\)"):
        c.check((1.0, 2), "p")
    with pytest.raises(TypeError, match=r"p\[1\] must be an int"):
        c.check((0.5, 2.0), "p")
    for bad in (0.5, (0.5,), (0.5, 2, 3), "ab"):
        with pytest.raises(TypeError, match="p must be a pair"):
            c.check(bad, "p")


def test_check_seed_and_make_rng():
    g = np.random.default_rng(1)
    assert v.check_seed(None) is None and v.check_seed(np.int64(3)) == 3 and v.check_seed(g) is g
    assert module.make_rng(g) is g
    assert module.make_rng(5).integers(1 << 30) == np.random.default_rng(5).integers(1 << 30)
    for bad in (1.0, True, "0", [1]):
        with pytest.raises(TypeError, match="seed must be an int or a numpy Generator or None"):
            module.make_rng(bad)
    with pytest.raises(ValueError, match="seed must be >= 0, got -1"):
        module.make_rng(-1)


# ------------------------------------------------------------------------ the policy where parameters enter
def _entry_points():
    """``(call, wrong type, bad value, name)``: each call takes the one parameter it checks."""
    from rnnfast import nn
    from rnnfast.train import callbacks as cb, clip, data, init, losses, metrics, optimizers as opt, schedules as sch
    from rnnfast.train.tbptt import TruncatedBPTTTrainer
    from rnnfast.train.trainer import Trainer

    lin = nn.Linear(2, 2, seed=0)

    def trainer(**kw):
        return Trainer(lin, losses.MSE(), opt.SGD(lin), **kw)

    def fit(**kw):
        return trainer().fit(np.zeros((2, 3, 2)), np.zeros((2, 2)), **kw)

    def tbptt(**kw):
        return TruncatedBPTTTrainer(nn.Sequential(nn.Stateful(nn.LSTM(1, 2))), losses.MSE(), **kw)

    ds = data.SequenceDataset(np.zeros((4, 2, 1)))
    return [
        (lambda x: trainer(clip_norm=x), "1", -1.0, "clip_norm"),
        (lambda x: trainer(clip_value=x), True, 0.0, "clip_value"),
        (lambda x: trainer(verbose=x), "1", 3, "verbose"),
        (lambda x: fit(epochs=x), 1.0, -1, "epochs"),
        (lambda x: fit(batch_size=x), 2.0, 0, "batch_size"),
        (lambda x: fit(initial_epoch=x), "0", -1, "initial_epoch"),
        (lambda x: fit(seed=x), 0.5, -1, "seed"),
        (lambda x: fit(shuffle=x), 1, None, "shuffle"),
        (lambda x: fit(per_step=x), "no", None, "per_step"),
        (lambda x: data.SequenceDataset(np.zeros((2, 2, 1)), per_step=x), 0, None, "per_step"),
        (lambda x: trainer().evaluate(np.zeros((2, 3, 2)), np.zeros((2, 2)), batch_size=x), 1.5, 0, "batch_size"),
        (lambda x: tbptt(tbptt=x), 2.0, 0, "tbptt"),
        (lambda x: cb.EarlyStopping(patience=x), 1.0, -1, "patience"),
        (lambda x: cb.EarlyStopping(start_from_epoch=x), True, -1, "start_from_epoch"),
        (lambda x: cb.EarlyStopping(min_delta=x), "0", -0.1, "min_delta"),
        (lambda x: cb.EarlyStopping(mode=x), None, "median", "mode"),
        (lambda x: cb.EarlyStopping(monitor=x), 3, "", "monitor"),
        (lambda x: cb.TimeLimit(x), "60", 0, "seconds"),
        (lambda x: cb.ProgressBar(mininterval=x), "fast", -1.0, "mininterval"),
        (lambda x: ds.split(x), "0.5", 1.0, "validation_split"),
        (lambda x: init.pytorch_default((3,), fan_in=x), 2.0, 0, "fan_in"),
        (lambda x: init.init_recurrent(nn.LSTM(1, 2), forget_bias=x), "1", math.nan, "forget_bias"),
        (lambda x: init.glorot_uniform((2, 2), gain=x), None, math.nan, "gain"),
        (lambda x: opt.SGD(lin, lr=x), "fast", -0.1, "lr"),
        (lambda x: opt.SGD(lin, nesterov=x), 1, None, "nesterov"),
        (lambda x: opt.Adam(lin, betas=x), 0.9, (0.9, 1.0), "betas"),
        (lambda x: opt.RMSprop(lin, alpha=x), [0.5], 1.5, "alpha"),
        (lambda x: opt.SGD(lin).load_state_dict({**opt.SGD(lin).state_dict(), "steps": x}), 1.0, -1, "steps"),
        (lambda x: clip.clip_grad_norm([np.ones(2)], x), "1", 0.0, "max_norm"),
        (lambda x: clip.clip_grad_norm([np.ones(2)], 1.0, error_if_nonfinite=x), 1, None, "error_if_nonfinite"),
        (lambda x: sch.StepLR(opt.SGD(lin), step_size=x), 1.0, 0, "step_size"),
        (lambda x: sch.ReduceLROnPlateau(opt.SGD(lin), threshold_mode=x), 0, "median", "threshold_mode"),
        (lambda x: sch.ReduceLROnPlateau(opt.SGD(lin), factor=x), "0.5", 1.0, "factor"),
        (lambda x: sch.ExponentialLR(opt.SGD(lin), 0.9).load_state_dict(
            {"gamma": x, "base_lr": 0.1, "last_epoch": 0}), "0.9", -0.5, "gamma"),
        (lambda x: losses.MSE(reduction=x), None, "avg", "reduction"),
        (lambda x: losses.Huber(delta=x), "1", math.inf, "delta"),
        (lambda x: losses.CrossEntropy(ignore_index=x), 1.0, None, "ignore_index"),
        (lambda x: metrics.f1([0, 1], [0, 1], average=x), 1, "weighted", "average"),
        (lambda x: metrics.perplexity(x), "2", -1.0, "mean_cross_entropy"),
        (lambda x: metrics.Accuracy(from_logits=x), 1, None, "from_logits"),
        (lambda x: nn.LSTM(1, 2, bias=x), 1, None, "bias"),
        (lambda x: nn.GRU(1, 2, bidirectional=x), "yes", None, "bidirectional"),
        (lambda x: nn.LSTM(1, 2, dropout=x), "0.1", 1.5, "dropout"),
        (lambda x: nn.RNN(1, 2, nonlinearity=x), None, "sigmoid", "nonlinearity"),
        *_layer_entry_points(), *_dataset_entry_points(),
    ]


def _layer_entry_points():
    """The feed-forward layers, training mode, thread counts and archives."""
    from rnnfast import _threads, io as rio, nn

    return [
        (lambda x: nn.Embedding(4, 2, padding_idx=x), 1.0, 4, "padding_idx"),
        (lambda x: nn.Embedding(4, 2, padding_idx=x), True, -5, "padding_idx"),
        (lambda x: nn.Linear(2, 2, bias=x), 1, None, "bias"),
        (lambda x: nn.Dropout(x), "0.5", 1.5, "p must"),
        (lambda x: nn.Dropout(x), None, -0.1, "p must"),
        (lambda x: nn.LastStep(bidirectional=x), "yes", None, "bidirectional"),
        (lambda x: nn.Attention(3, 3, kind=x), 1, "bilinear", "kind"),
        (lambda x: nn.Linear(2, 2).train(x), 1, None, "mode"),
        (lambda x: nn.Dropout(0.1).train(x), None, None, "mode"),
        (lambda x: nn.Sequential(nn.Linear(2, 2)).train(x), "eval", None, "mode"),
        (lambda x: _threads.set_num_threads(x), 2.0, 0, "n must"),
        (lambda x: _threads.resolve_threads(x), "2", 0, "n_threads"),
        (lambda x: rio.save_archive("never-written.rnnfast", x, {}, {}), 3, "", "kind"),
    ]


def _dataset_entry_points():
    """The data set helpers; every check runs before any data file is read."""
    from rnnfast import datasets as D
    from rnnfast.datasets import Vocabulary

    vocab = Vocabulary(["a"], specials=("<pad>", "<unk>", "<s>", "</s>"))
    return [
        (lambda x: D.load_cmudict(split=x), 3, "dev", "split"),
        (lambda x: D.load_rotten_tomatoes(split=x), ("train",), "valid", "split"),
        (lambda x: Vocabulary.build([["a"]], min_count=x), 1.0, 0, "min_count"),
        (lambda x: Vocabulary.build([["a"]], max_size=x), "5", -1, "max_size"),
        (lambda x: vocab.encode("a", add_bos=x), 1, None, "add_bos"),
        (lambda x: vocab.encode_batch(["a"], add_eos=x), "yes", None, "add_eos"),
        (lambda x: D.make_windows(np.zeros(10), x), 3.0, 0, "input_len"),
        (lambda x: D.make_windows(np.zeros(10), 2, horizon=x), "1", 0, "horizon"),
        (lambda x: D.make_windows(np.zeros(10), 2, stride=x), True, -1, "stride"),
        (lambda x: D.load_cmudict(all_pronunciations=x), 1, None, "all_pronunciations"),
        (lambda x: D.cmudict_split(stress=x), "no", None, "stress"),
        (lambda x: D.load_rotten_tomatoes(return_movies=x), 1, None, "return_movies"),
        (lambda x: D.load_rotten_tomatoes(drop_duplicates=x), "no", None, "drop_duplicates"),
        (lambda x: D.tokenize("a b", lower=x), 1, None, "lower"),
        (lambda x: D.build_vocabulary([], lower=x), None, None, "lower"),
        (lambda x: D.texts_to_sequences([], vocab, lower=x), 0, None, "lower"),
    ]


@pytest.mark.parametrize("case", range(len(_entry_points())))
def test_wrong_type_is_type_error_and_bad_value_is_value_error(case):
    call, wrong_type, bad_value, name = _entry_points()[case]
    with pytest.raises(TypeError, match=name) as info:
        call(wrong_type)
    assert not isinstance(info.value, ValueError)
    if bad_value is not None:
        with pytest.raises(ValueError, match=name) as info:
            call(bad_value)
        assert not isinstance(info.value, TypeError)


# ------------------------------------------------------------------------------ thread counts
@pytest.mark.parametrize("value,err,msg", [
    (0, ValueError, r"n_threads must be >= 1 or None, got 0"),
    (-3, ValueError, r"n_threads must be >= 1 or None, got -3"),
    (257, ValueError, r"n_threads must be at most 256 \(rnnfast.MAX_THREADS.*got 257"),
    (2**31, ValueError, r"at most 256 .*got 2147483648"),   # was an OverflowError naming no argument
    (True, TypeError, r"n_threads must be an int or None, got bool"),
    (np.bool_(True), TypeError, r"n_threads must be an int"),
    (4.0, TypeError, r"n_threads must be an int or None, got float"),
    ("4", TypeError, r"n_threads must be an int or None, got str"),
])
def test_check_threads(value, err, msg):
    from rnnfast._validation import check_threads
    with pytest.raises(err, match=msg):
        check_threads(value)


def test_check_threads_accepts_the_range_and_none():
    from rnnfast._validation import MAX_THREADS, check_threads
    assert check_threads(None) is None
    assert check_threads(np.int64(3)) == 3 and type(check_threads(np.int64(3))) is int
    assert check_threads(MAX_THREADS) == MAX_THREADS
    with pytest.raises(TypeError, match="workers must be an int or None"):
        check_threads("x", "workers")
    with pytest.raises(TypeError):
        check_threads(None, allow_none=False)
