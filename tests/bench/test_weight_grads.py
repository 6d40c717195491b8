"""bench/weight_grads.py: which points its rule puts on rf's kernel, and a race that leaves the rule as it
found it."""
import weight_grads  # bench/, put on sys.path by this folder's conftest.py

from rnnfast._kernels import _recurrent as _k


def test_uses_rf_follows_the_rule():
    rule = (2048, 1 << 18)
    assert weight_grads.uses_rf("lstm-B512-T25-I12-H200-L1-uni-train", rule)  # (12 + 200) 800 outputs
    assert not weight_grads.uses_rf("lstm-B8-T25-I12-H200-L1-uni-train", rule)  # 200 rows
    assert not weight_grads.uses_rf("lstm-B512-T25-I256-H256-L1-uni-train", rule)  # 512 x 1024
    assert not weight_grads.uses_rf("gru-B512-T25-I12-H200-L1-uni-train", rule)
    # a stacked layer: the first layer's product qualifies though the second's (F = 2 H) does not
    assert weight_grads.uses_rf("rnn-B64-T100-I64-H256-L2-bi-train", rule)


def test_seeded_points_use_rfs_kernel():
    names = weight_grads.seeded(5, seed=3, rule=(2048, 1 << 18))
    assert len(names) == 5 and all(weight_grads.uses_rf(n, (2048, 1 << 18)) for n in names)


def test_race_restores_the_rule():
    before = weight_grads.current_rule()
    rule_ms, blas_ms = weight_grads.race("rnn-B16-T16-I8-H32-L1-uni-train", 1, 1)
    assert rule_ms > 0 and blas_ms > 0
    assert weight_grads.current_rule() == before
    assert _k.set_tn_rule(*before) == before
