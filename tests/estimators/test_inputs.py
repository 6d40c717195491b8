"""Encoding X: features or token ids, padded, with lengths; checked against a fitted InputSpec."""
import numpy as np
import pytest

from rnnfast.estimators.inputs import InputSpec, encode_inputs, input_spec, is_ragged

F32 = np.dtype(np.float32)


def test_feature_array():
    X = np.arange(24, dtype=np.float64).reshape(2, 4, 3)
    enc = encode_inputs(X, F32)
    assert enc.kind == "features" and enc.X.dtype == F32 and enc.lengths is None and not enc.from_list
    assert (enc.n, enc.t, enc.n_features) == (2, 4, 3)
    assert input_spec(enc, None) == InputSpec("features", 3)


def test_ragged_features_and_tokens():
    enc = encode_inputs([np.ones((2, 3)), np.ones((4, 3))], F32)
    assert enc.from_list and enc.lengths.tolist() == [2, 4] and enc.X.shape == (2, 4, 3)
    tok = encode_inputs([[1, 2], [3, 4, 5]], F32)
    assert tok.kind == "tokens" and tok.lengths.tolist() == [2, 3] and tok.max_id == 5
    assert input_spec(tok, None) == InputSpec("tokens", 1, 6)
    with pytest.raises(ValueError, match="vocab_size=4"):
        input_spec(tok, 4)


def test_trailing_zero_tokens_are_padding():
    enc = encode_inputs(np.array([[1, 2, 0], [3, 4, 5]]), F32)
    assert enc.lengths.tolist() == [2, 3]
    assert encode_inputs(np.array([[1, 2], [3, 4]]), F32).lengths is None


def test_univariate_2d_only_when_asked():
    X = np.ones((3, 5))
    assert encode_inputs(X, F32, univariate_2d=True).X.shape == (3, 5, 1)
    with pytest.raises(ValueError, match="X has shape"):
        encode_inputs(X, F32)
    assert encode_inputs([np.ones(2), np.ones(3)], F32, univariate_2d=True).X.shape == (2, 3, 1)


@pytest.mark.parametrize("X, exc, match", [
    (np.ones((2, 3, 1), complex), ValueError, "Complex data not supported"),
    (np.array([[["a"]]]), ValueError, "numeric"),
    (np.ones(4), ValueError, "Reshape your data"),
    (np.array([[[1.0]], [[np.nan]]]), ValueError, "NaN"),
    (np.array([[-1, 2]]), ValueError, ">= 0"),
])
def test_bad_inputs(X, exc, match):
    with pytest.raises(exc, match=match):
        encode_inputs(X, F32)


def test_sparse_and_object_arrays():
    sparse = pytest.importorskip("scipy.sparse")
    with pytest.raises(TypeError, match="sparse"):
        encode_inputs(sparse.csr_matrix(np.ones((2, 3))), F32, univariate_2d=True)
    assert encode_inputs(np.ones((2, 3, 1)).astype(object), F32).X.dtype == F32


def test_checked_against_the_fitted_spec():
    with pytest.raises(ValueError, match="X has 2 features, but LSTM is expecting 3"):
        encode_inputs(np.ones((1, 2, 2)), F32, InputSpec("features", 3), "LSTM")
    with pytest.raises(ValueError, match="fitted on features"):
        encode_inputs(np.ones((1, 2), int), F32, InputSpec("features", 3), "LSTM")
    with pytest.raises(ValueError, match="outside the vocabulary"):
        encode_inputs(np.array([[1, 7]]), F32, InputSpec("tokens", 1, 5), "LSTM")


def test_is_ragged():
    assert is_ragged([[1, 2], [3]]) and is_ragged([np.ones(2)]) and not is_ragged(np.ones((2, 2)))
    assert not is_ragged([np.float32(1.0), np.float32(2.0)]) and not is_ragged([])
