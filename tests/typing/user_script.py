"""A small user program, type-checked by tests/typing/test_typing.py with mypy against the installed rnnfast
(its ``py.typed`` and annotations). It is also run, so that what mypy accepts is a program that works."""
import os
import tempfile

import numpy as np
import numpy.typing as npt

import rnnfast as rf


def layer_round_trip(x: npt.NDArray[np.float32]) -> tuple[np.ndarray, np.ndarray]:
    lstm = rf.nn.LSTM(3, 8, num_layers=1, seed=0)
    out, (h_n, c_n) = lstm(x)
    dx, _ = lstm.backward(np.ones_like(out))
    return out, dx


def train_and_reload(X: npt.NDArray[np.float32], y: npt.NDArray[np.int64]) -> np.ndarray:
    model = rf.LSTM(hidden_size=8, epochs=1, random_state=0, verbose=0).fit(X, y)
    pred = model.predict(X)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.rnnfast")
        model.save(path)
        again = rf.load(path)
    assert np.array_equal(again.predict(X), pred)
    return np.asarray(pred)


def main() -> None:
    rf.set_num_threads(2)
    n: int = rf.get_num_threads()
    rng = np.random.default_rng(0)
    X = rng.standard_normal((32, 6, 3)).astype(np.float32)
    y = (X[:, :, 0].sum(axis=1) > 0).astype(np.int64)
    out, dx = layer_round_trip(X)
    assert out.shape == (32, 6, 8) and dx.shape == X.shape
    pred = train_and_reload(X, y)
    rf.set_num_threads(None)
    print(f"ok: {n} threads, {pred.shape[0]} predictions")


if __name__ == "__main__":
    main()
