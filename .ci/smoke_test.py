"""Smoke test of an installed rnnfast wheel, run from outside the checkout (.ci/wheel_check.sh, and
cibuildwheel's test-command): the package comes from site-packages, its kernels run on the OpenMP runtime
that auditwheel grafted into the wheel (rnnfast.libs/), and an estimator fits and predicts."""
import os

import numpy as np

import rnnfast as rf
from rnnfast._kernels import _recurrent  # noqa: F401  (the compiled kernels load)


def main() -> None:
    here = os.path.dirname(rf.__file__)
    assert "site-packages" in here, f"rnnfast imported from {here}, not from an installed wheel"
    with open("/proc/self/maps") as f:
        gomp = sorted({line.split()[-1] for line in f if "libgomp" in line})
    # the grafted OpenMP runtime, not the system's (a wheel built without OpenMP would load none)
    assert gomp and all("rnnfast.libs" in p for p in gomp), gomp
    rng = np.random.default_rng(0)
    X = rng.standard_normal((64, 12, 3)).astype(np.float32)
    y = (X[:, :, 0].sum(axis=1) > 0).astype(np.int64)
    rf.set_num_threads(2)
    pred = rf.LSTM(hidden_size=8, epochs=1, random_state=0, verbose=0).fit(X, y).predict(X)
    assert pred.shape == (64,) and set(np.unique(pred)) <= {0, 1}, pred
    print(f"smoke test passed: rnnfast {rf.__version__} from {here}, OpenMP {os.path.basename(gomp[0])}")


if __name__ == "__main__":
    main()
