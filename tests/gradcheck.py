"""Central finite differences for float64 gradient checks of layers, models and losses."""
import numpy as np


def numeric_grad(f, x, eps=1e-6, indices=None):
    """d f / d x by central differences; ``x`` is perturbed in place (and restored). With ``indices`` (into
    the flattened ``x``) only those entries are computed; the others stay zero."""
    g = np.zeros(x.shape, dtype=np.float64)
    flat, gflat = x.reshape(-1), g.reshape(-1)
    for i in (range(flat.size) if indices is None else indices):
        old = flat[i]
        flat[i] = old + eps
        fp = f()
        flat[i] = old - eps
        fm = f()
        flat[i] = old
        gflat[i] = (fp - fm) / (2 * eps)
    return g


def assert_close(actual, desired, what="", rtol=1e-6, atol=1e-8):
    np.testing.assert_allclose(actual, desired, rtol=rtol, atol=atol, err_msg=what)


def check_params(model, objective, rtol=1e-6, atol=1e-8):
    """Compare ``model.grads`` (already accumulated by one backward) with finite differences of
    ``objective()`` (which must run the forward pass) for every parameter."""
    grads = {k: v.copy() for k, v in model.grads.items()}
    for name, p in model.named_parameters():
        num = numeric_grad(objective, p)
        assert_close(grads[name], num, f"gradient of {name}", rtol, atol)
