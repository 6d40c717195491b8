"""Feed-forward layers to compose with the recurrent ones: Embedding, Linear, Dropout, sequence
reductions (LastStep, MeanPool, MaxPool) and Attention (Luong dot / general, Bahdanau additive).

All are batch-first: sequences are (B, T, F), right-padded, with ``lengths`` (B,) giving the valid steps.
Each layer has ``forward`` and ``backward``; parameters and accumulated gradients follow
:class:`rnnfast.nn.Module` (PyTorch key names where PyTorch has the layer).
"""
import numpy as np

from rnnfast._kernels import _optim
from rnnfast._kernels import _recurrent as _k
from rnnfast._threads import resolve_threads
from rnnfast._typing import ArrayLike, DTypeLike, Seed
from rnnfast._validation import check_bool, check_int, check_option, check_real

from rnnfast.nn.module import (Module, _shared, as_float, as_float_keep, check_float_dtype, check_lengths,
                               check_param_count, make_rng, time_mask, to_numpy)

__all__ = ["Embedding", "Linear", "Dropout", "LastStep", "MeanPool", "MaxPool", "Attention"]


def _check_grad(dout: ArrayLike, shape: tuple[int, ...], dtype: np.dtype, name: str = "dout") -> np.ndarray:
    """The upstream gradient as ``dtype``, with the forward output's shape."""
    dout = as_float(dout, dtype, name)
    if dout.shape != tuple(shape):
        raise ValueError(f"{name} must have the output's shape {tuple(shape)}, got {dout.shape}")
    return dout


def _check_seq(x: ArrayLike, name: str = "x") -> np.ndarray:
    """A (B, T, F) float array with B, T >= 1 (float32/float64 kept, integers -> float64)."""
    x = as_float_keep(x, name)
    if x.ndim != 3:
        raise ValueError(f"{name} must be 3-D (batch, time, features), got shape {x.shape}")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{name} must have at least one sequence and one time step, got shape {x.shape}")
    return x


# ---------------------------------------------------------------------------------------- Embedding
class Embedding(Module):
    """Lookup table from integer ids to vectors, PyTorch's ``torch.nn.Embedding``.

    Parameters
    ----------
    num_embeddings : int
        Size of the vocabulary; ids are in [0, num_embeddings).
    embedding_dim : int
    padding_idx : int, optional
        Id of the padding token (negative counts from the end, as in PyTorch). Its row starts at zero
        and receives no gradient, so it stays zero under any optimizer without weight decay.
    dtype : float32 (default) or float64
    seed : int or numpy Generator, optional
        Seeds the initial weights, N(0, 1) as PyTorch's.

    Notes
    -----
    ``forward(ids)`` takes an integer array of any shape, typically (B, T), and returns
    ``ids.shape + (embedding_dim,)``. ``backward(dout)`` accumulates into ``grads["weight"]`` and returns
    None: there is no gradient wrt integer ids.

    Examples
    --------
    >>> emb = Embedding(10, 4, padding_idx=0, seed=0)
    >>> emb(np.array([[1, 2, 0]])).shape
    (1, 3, 4)
    """

    _read_only = ("num_embeddings", "embedding_dim", "padding_idx", "dtype")

    def __init__(self, num_embeddings: int, embedding_dim: int, padding_idx: int | None = None,
                 dtype: DTypeLike = np.float32, seed: Seed = None) -> None:
        super().__init__()
        self.num_embeddings = check_int(num_embeddings, "num_embeddings", 1)
        self.embedding_dim = check_int(embedding_dim, "embedding_dim", 1)
        n = self.num_embeddings
        padding_idx = check_int(padding_idx, "padding_idx", -n, n - 1, allow_none=True)
        if padding_idx is not None:
            padding_idx %= n
        self.padding_idx = padding_idx
        self.dtype = check_float_dtype(dtype)
        check_param_count(n * self.embedding_dim, self.dtype, f"Embedding({n}, {self.embedding_dim})")
        w = make_rng(seed).standard_normal((self.num_embeddings, self.embedding_dim)).astype(self.dtype)
        if padding_idx is not None:
            w[padding_idx] = 0
        self._add_param("weight", w)

    def _check_ids(self, x: ArrayLike) -> np.ndarray:
        try:
            ids = np.asarray(to_numpy(x))
        except (TypeError, ValueError) as e:
            raise TypeError(f"ids must be an integer array: {e}") from None
        if ids.dtype.kind not in "iu":
            raise TypeError(f"ids must be integers (token indices), got dtype {ids.dtype}")
        if ids.size:
            lo, hi = ids.min(), ids.max()
            if lo < 0 or hi >= self.num_embeddings:
                bad = lo if lo < 0 else hi
                raise ValueError(f"ids must be in [0, {self.num_embeddings}) (num_embeddings), got {bad}")
        return ids.astype(np.intp, copy=False)

    def forward(self, x: ArrayLike, *, lengths: ArrayLike | None = None, n_threads: int | None = None) -> np.ndarray:
        """Look up ``x`` (integer array) -> ``x.shape + (embedding_dim,)``."""
        ids = self._check_ids(x)
        out = self._params["weight"][ids]
        self._keep(ids)
        return out

    def backward(self, dout: ArrayLike, *, n_threads: int | None = None) -> None:
        """Accumulate ``grads["weight"]`` (padding row excluded). Returns None (ids have no gradient)."""
        ids = self._take_cache()
        dout = _check_grad(dout, ids.shape + (self.embedding_dim,), self.dtype)
        flat_ids = ids.reshape(-1)
        flat = dout.reshape(-1, self.embedding_dim)
        if self.padding_idx is not None:
            keep = flat_ids != self.padding_idx
            flat_ids, flat = flat_ids[keep], flat[keep]
        # repeated ids must each add their share (not fancy-index +=): row by row in order as np.add.at
        # adds them (the same rounding), compiled (np.add.at took 0.5 ms for 1,000 rows of 64)
        _optim.add_rows_(self.grads["weight"], np.ascontiguousarray(flat_ids), np.ascontiguousarray(flat))
        return None

    def extra_repr(self) -> str:
        pad = f", padding_idx={self.padding_idx}" if self.padding_idx is not None else ""
        return f"{self.num_embeddings}, {self.embedding_dim}{pad}, dtype={self.dtype.name}"


# ---------------------------------------------------------------------------------------- Linear
class Linear(Module):
    """Affine map ``y = x W^T + b`` on the last axis, PyTorch's ``torch.nn.Linear``.

    Applied to (..., in_features) input it acts on every leading position independently, e.g. per time
    step of a (B, T, F) sequence.

    Parameters
    ----------
    in_features, out_features : int
    bias : bool, default True
    dtype : float32 (default) or float64
    seed : int or numpy Generator, optional
        Seeds PyTorch's default initialisation: weight and bias uniform(-1/sqrt(in), 1/sqrt(in)).

    Notes
    -----
    Parameters ``weight`` (out_features, in_features) and ``bias`` (out_features,), as in PyTorch.
    :meth:`cross_entropy` runs the layer fused with a softmax cross-entropy and both backward products (an
    output layer over a large vocabulary, in training).
    """

    _read_only = ("in_features", "out_features", "bias", "dtype")
    _per_thread = ("_scratch",)  # cross_entropy's block of logits, reused (each thread its own)
    _scratch: np.ndarray | None
    _TRANSIENT = {**Module._TRANSIENT, "_scratch": lambda: None}

    def __init__(self, in_features: int, out_features: int, bias: bool = True, dtype: DTypeLike = np.float32,
                 seed: Seed = None) -> None:
        super().__init__()
        self.in_features = check_int(in_features, "in_features", 1)
        self.out_features = check_int(out_features, "out_features", 1)
        self.bias = check_bool(bias, "bias")
        self.dtype = check_float_dtype(dtype)
        check_param_count((self.in_features + 1) * self.out_features, self.dtype,
                          f"Linear({self.in_features}, {self.out_features})")
        rng = make_rng(seed)
        k = 1.0 / np.sqrt(self.in_features)
        self._add_param("weight", rng.uniform(-k, k, (self.out_features, self.in_features)).astype(self.dtype))
        if self.bias:
            self._add_param("bias", rng.uniform(-k, k, self.out_features).astype(self.dtype))

    def forward(self, x: ArrayLike, *, lengths: ArrayLike | None = None, n_threads: int | None = None) -> np.ndarray:
        """(..., in_features) -> (..., out_features)."""
        x = as_float(x, self.dtype, "x")
        if x.ndim == 0 or x.shape[-1] != self.in_features:
            raise ValueError(f"x must have in_features={self.in_features} on its last axis, got shape {x.shape}")
        nth = resolve_threads(n_threads)
        # one 2-D product on rnnfast's threads (numpy would run a stacked (B, T, F) @ W as B products,
        # on a BLAS thread pool that stalls when another process competes for the cores)
        x2 = np.ascontiguousarray(x.reshape(-1, self.in_features))
        out = np.empty((x2.shape[0], self.out_features), self.dtype)
        _k.matmul(x2, self._params["weight"], out, trans_b=True, nthreads=nth)
        if self.bias:
            out += self._params["bias"]
        self._keep((x2, x.shape))
        return out.reshape(x.shape[:-1] + (self.out_features,))

    def backward(self, dout: ArrayLike, *, n_threads: int | None = None) -> np.ndarray:
        """Accumulate ``grads``; returns the gradient wrt the input, shape (..., in_features)."""
        x2, xshape = self._take_cache()
        nth = resolve_threads(n_threads)
        d = _check_grad(dout, xshape[:-1] + (self.out_features,), self.dtype)
        d2 = np.ascontiguousarray(d.reshape(-1, self.out_features))
        _k.matmul(d2, x2, self.grads["weight"], trans_a=True, beta=1.0, nthreads=nth)
        if self.bias:
            self.grads["bias"] += d2.sum(axis=0)
        dx = np.empty_like(x2)
        _k.matmul(d2, self._params["weight"], dx, nthreads=nth)
        return dx.reshape(xshape)

    def cross_entropy(self, x: ArrayLike, target: ArrayLike, *, reduction: str = "mean",
                      label_smoothing: float = 0.0, n_threads: int | None = None) -> tuple[float, np.ndarray]:
        """The layer and a softmax cross-entropy on its outputs, fused, with the gradients: ``grads`` are added
        to and the gradient wrt ``x`` is returned (no :meth:`backward` call follows).

        Equal, up to float rounding, to ``CrossEntropy(reduction=reduction, label_smoothing=label_smoothing)(
        self(x), target)`` then
        ``self.backward(dlogits)``, but run :data:`CE_BLOCK_ROWS` rows at a time in one reused scratch
        buffer: the block's GEMM, a stable log-softmax, the loss, ``softmax - onehot`` in place and the
        block's two backward GEMMs, so the (N, out_features) logits are never held whole. Give it only the
        rows that have a target (gather padded steps out first). Works in eval mode too (the gradients are
        still added).

        Parameters
        ----------
        x : array (N, in_features)
        target : int array (N,)
            Class indices in [0, out_features).
        reduction : {"mean", "sum"}, default "mean"
            "mean" divides by N (0 for N = 0).
        label_smoothing : float in [0, 1], default 0
            The target distribution is ``(1 - label_smoothing) * onehot + label_smoothing / out_features``
            (PyTorch's ``CrossEntropyLoss(label_smoothing=...)``).
        n_threads : int, optional

        Returns
        -------
        value : float
        dx : ndarray (N, in_features) of the layer's dtype

        Examples
        --------
        >>> lin = Linear(3, 7, dtype=np.float64, seed=0)
        >>> x, t = np.ones((5, 3)), np.array([0, 1, 2, 3, 4])
        >>> value, dx = lin.cross_entropy(x, t)
        >>> from rnnfast.train import CrossEntropy
        >>> bool(np.isclose(value, CrossEntropy()(lin(x), t)[0]))
        True
        """
        x = as_float(x, self.dtype, "x")
        if x.ndim != 2 or x.shape[1] != self.in_features:
            raise ValueError(f"x must be (N, in_features={self.in_features}), got shape {x.shape}")
        reduction = check_option(reduction, "reduction", ("mean", "sum"))
        eps = check_real(label_smoothing, "label_smoothing", 0.0, 1.0)
        N, C = x.shape[0], self.out_features
        target = _check_class_targets(target, N, C)
        nth = resolve_threads(n_threads)
        x = np.ascontiguousarray(x)
        dx = np.empty_like(x)  # every block's rows written by its last GEMM
        n = min(N, CE_BLOCK_ROWS)
        if N == 0:
            return 0.0, dx
        scratch = self._scratch
        if scratch is None or scratch.size < n * C:
            scratch = self._scratch = np.empty(n * C, self.dtype)
        scale = self.dtype.type(1.0 / N if reduction == "mean" else 1.0)
        w, gw, total = self._params["weight"], self.grads["weight"], 0.0
        # the bias gradient: on threads as block.T @ ones (256 x 4858: 0.06 ms on 2 threads, numpy's serial
        # sum 0.16), on one thread numpy's sum (the product takes 0.33 there)
        gb, ones = self.grads.get("bias"), (np.ones((n, 1), self.dtype) if nth > 1 else None)
        with _shared(self).lock:  # the gradients accumulate as in backward
            for s in range(0, N, n):
                xb = x[s:s + n]
                rows = xb.shape[0]
                block = scratch[:rows * C].reshape(rows, C)
                _k.matmul(xb, w, block, trans_b=True, nthreads=nth)
                if self.bias:
                    block += self._params["bias"]
                total += _softmax_minus_onehot_(block, target[s:s + n], scale, nth, eps)
                _k.matmul(block, xb, gw, trans_a=True, beta=1.0, nthreads=nth)
                if gb is not None and ones is not None:
                    _k.matmul(block, ones[:rows], gb.reshape(C, 1), trans_a=True, beta=1.0, nthreads=nth)
                elif gb is not None:
                    gb += block.sum(axis=0)
                _k.matmul(block, w, dx[s:s + n], nthreads=nth)
        return total * float(scale), dx

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, bias={self.bias}, dtype={self.dtype.name}"


#: Rows per block of :meth:`Linear.cross_entropy`: the block's logits (256 x 4858 float32 = 5 MB on the
#: translation example) stay in cache from their GEMM through the softmax passes to the two backward GEMMs.
#: Measured there (N = 900 rows, 128 -> 4858, one thread, busy machine, min of 7): 32 rows 126 ms, 64: 84,
#: 128: 52, 256: 60, 512: 76, all 900 at once: 83; the unfused Linear + CrossEntropy + backward: 128 ms.
CE_BLOCK_ROWS = 256


def _check_class_targets(target: ArrayLike, n: int, classes: int) -> np.ndarray:
    """Class indices (n,) in [0, classes) as intp."""
    t = np.asarray(to_numpy(target))
    if t.dtype.kind not in "iu":
        raise TypeError(f"target must hold integer class indices, got dtype {t.dtype}")
    if t.shape != (n,):
        raise ValueError(f"target must have shape ({n},) (one class per row of x), got {t.shape}")
    if n and (t.min() < 0 or t.max() >= classes):
        raise ValueError(f"target class indices must be in [0, {classes}), got {t.min()}..{t.max()}")
    return np.ascontiguousarray(t, np.intp)


def _softmax_minus_onehot_(block: np.ndarray, target: np.ndarray, scale: np.floating,
                           n_threads: int = 1, eps: float = 0.0) -> float:
    """In place: logits (n, C) become ``scale * (softmax - q)``, q the target distribution ``(1 - eps) *
    onehot(target) + eps / C``; returns the rows' summed cross-entropies against q (in float64). float32:
    one compiled pass per row, rows on ``n_threads`` threads (rnnfast._kernels._optim.softmax_xent_; 1.5 ->
    0.8 ms for 256 x 4858 on one thread); float64: numpy's passes.

    Smoothing, from the plain pass: ``-sum_c q_c log p_c = CE + eps * (z_t - mean_c z_c)`` (``log p_c = z_c -
    logsumexp``), and ``softmax - q = (softmax - onehot) + eps * onehot - eps / C``."""
    if eps:
        rows = np.arange(block.shape[0])
        shift = float(np.sum(block[rows, target], dtype=np.float64) - np.sum(block, dtype=np.float64) / block.shape[1])
    if block.dtype == np.float32:
        total = _optim.softmax_xent_(block, target, float(scale), n_threads)
    else:
        total = _softmax_minus_onehot_np(block, target, scale)
    if eps:
        block -= block.dtype.type(scale * eps / block.shape[1])
        block[rows, target] += block.dtype.type(scale * eps)
        total += eps * shift
    return total


def _softmax_minus_onehot_np(block: np.ndarray, target: np.ndarray, scale: np.floating) -> float:
    """:func:`_softmax_minus_onehot_` in numpy passes."""
    rows = np.arange(block.shape[0])
    block -= block.max(axis=1, keepdims=True)
    picked = block[rows, target].astype(np.float64)
    np.exp(block, out=block)
    s = block.sum(axis=1)
    block *= (scale / s)[:, None]
    block[rows, target] -= scale
    return float(np.sum(np.log(s.astype(np.float64)) - picked))


# ---------------------------------------------------------------------------------------- Dropout
class Dropout(Module):
    """Inverted dropout: in training mode zero each element with probability ``p`` and scale the rest
    by 1 / (1 - p); identity in eval mode (PyTorch's ``torch.nn.Dropout``).

    Parameters
    ----------
    p : float in [0, 1], default 0.5
    seed : int or numpy Generator, optional
        Seeds the masks.
    """

    p: float
    _rng: np.random.Generator

    def __init__(self, p: float = 0.5, seed: Seed = None) -> None:
        super().__init__()
        self.p = check_real(p, "p", 0, 1)
        self._rng = make_rng(seed)

    def forward(self, x: ArrayLike, *, lengths: ArrayLike | None = None, n_threads: int | None = None) -> np.ndarray:
        """Apply dropout (training) or return ``x`` unchanged (eval); float dtypes are kept."""
        x = as_float_keep(x, "x")
        if not self.training or self.p == 0.0:
            self._keep((x.shape, None))
            return x
        keep = 1.0 - self.p
        scale = 0.0 if keep == 0.0 else 1.0 / keep
        mask = (self._rng.random(x.shape) < keep).astype(x.dtype)
        mask *= x.dtype.type(scale)
        self._keep((x.shape, mask))
        return x * mask

    def backward(self, dout: ArrayLike, *, n_threads: int | None = None) -> np.ndarray:
        """Gradient wrt the input: ``dout`` times the same mask."""
        shape, mask = self._take_cache()
        dout = as_float_keep(dout, "dout")
        if dout.shape != shape:
            raise ValueError(f"dout must have the output's shape {shape}, got {dout.shape}")
        return dout if mask is None else dout * mask

    def extra_repr(self) -> str:
        return f"p={self.p}"


# ---------------------------------------------------------------------------------------- reductions
class LastStep(Module):
    """Select each sequence's output at its last valid step: (B, T, F) -> (B, F).

    Parameters
    ----------
    bidirectional : bool, default False
        For the output of a bidirectional recurrent layer (features = [forward H | reverse H]). The
        reverse direction's output at the last valid step has seen only that one step; its summary of
        the whole sequence is its output at step 0. With ``bidirectional=True`` the first half of the
        features is taken at the last valid step and the second half at step 0, which equals the last
        layer's final states ``concatenate([h_n[-2], h_n[-1]], axis=-1)``. Alternatively use those
        final states directly (the recurrent layer returns them), which needs no selection layer.

    Notes
    -----
    ``forward(x, lengths=None)``: without ``lengths`` every sequence ends at step T - 1.
    """

    _read_only = ("bidirectional",)

    def __init__(self, bidirectional: bool = False) -> None:
        super().__init__()
        self.bidirectional = check_bool(bidirectional, "bidirectional")

    def forward(self, x: ArrayLike, lengths: ArrayLike | None = None, *, n_threads: int | None = None) -> np.ndarray:
        """(B, T, F) -> (B, F) at step ``lengths - 1`` (the reverse half at step 0 if bidirectional)."""
        x = _check_seq(x)
        B, T, F = x.shape
        lengths = check_lengths(lengths, B, T)
        last = np.full(B, T - 1) if lengths is None else lengths - 1
        if self.bidirectional and F % 2:
            raise ValueError(f"bidirectional=True needs an even number of features, got {F}")
        rows = np.arange(B)
        out = x[rows, last]
        if self.bidirectional:
            out[:, F // 2:] = x[:, 0, F // 2:]
        self._keep((x.shape, x.dtype, last))
        return out

    def backward(self, dout: ArrayLike, *, n_threads: int | None = None) -> np.ndarray:
        """(B, F) -> (B, T, F), zero except at the selected steps."""
        (B, T, F), dtype, last = self._take_cache()
        dout = _check_grad(dout, (B, F), dtype)
        dx = np.zeros((B, T, F), dtype)
        rows = np.arange(B)
        if self.bidirectional:
            h = F // 2
            dx[rows, last, :h] = dout[:, :h]
            dx[:, 0, h:] += dout[:, h:]
        else:
            dx[rows, last] = dout
        return dx

    def extra_repr(self) -> str:
        return "bidirectional=True" if self.bidirectional else ""


class MeanPool(Module):
    """Mean over the valid time steps: (B, T, F) -> (B, F); ``forward(x, lengths=None)``."""

    def forward(self, x: ArrayLike, lengths: ArrayLike | None = None, *, n_threads: int | None = None) -> np.ndarray:
        """Average of ``x[b, :lengths[b]]`` for each sequence b."""
        x = _check_seq(x)
        B, T, F = x.shape
        lengths = check_lengths(lengths, B, T)
        if lengths is None:
            n = np.full(B, T)
            out = x.mean(axis=1)
        else:
            n = lengths
            mask = time_mask(lengths, B, T)
            out = np.einsum("btf,bt->bf", x, mask.astype(x.dtype)) / n[:, None].astype(x.dtype)
        self._keep((x.shape, x.dtype, lengths, n))
        return out

    def backward(self, dout: ArrayLike, *, n_threads: int | None = None) -> np.ndarray:
        """(B, F) -> (B, T, F): ``dout / length`` at valid steps, zero at padded ones."""
        (B, T, F), dtype, lengths, n = self._take_cache()
        dout = _check_grad(dout, (B, F), dtype)
        scaled = dout / n[:, None].astype(dtype)
        dx = np.broadcast_to(scaled[:, None, :], (B, T, F)).copy()
        if lengths is not None:
            dx[~time_mask(lengths, B, T)] = 0
        return dx


class MaxPool(Module):
    """Maximum over the valid time steps: (B, T, F) -> (B, F); ``forward(x, lengths=None)``.

    The gradient goes to the (first) step holding the maximum, per feature.
    """

    def forward(self, x: ArrayLike, lengths: ArrayLike | None = None, *, n_threads: int | None = None) -> np.ndarray:
        """Max of ``x[b, :lengths[b]]`` for each sequence b and feature."""
        x = _check_seq(x)
        B, T, F = x.shape
        lengths = check_lengths(lengths, B, T)
        xm = x
        if lengths is not None:
            xm = np.where(time_mask(lengths, B, T)[:, :, None], x, -np.inf)
        arg = xm.argmax(axis=1)  # (B, F)
        out = np.take_along_axis(x, arg[:, None, :], axis=1)[:, 0, :]
        self._keep((x.shape, x.dtype, arg))
        return out

    def backward(self, dout: ArrayLike, *, n_threads: int | None = None) -> np.ndarray:
        """(B, F) -> (B, T, F), ``dout`` at each maximum's step, zero elsewhere."""
        (B, T, F), dtype, arg = self._take_cache()
        dout = _check_grad(dout, (B, F), dtype)
        dx = np.zeros((B, T, F), dtype)
        np.put_along_axis(dx, arg[:, None, :], dout[:, None, :], axis=1)
        return dx


# ---------------------------------------------------------------------------------------- Attention
def _project(x: np.ndarray, w: np.ndarray, transpose: bool = True, n_threads: int | None = None) -> np.ndarray:
    """``x @ w.T`` (or ``x @ w``) on the last axis as ONE 2-D product (numpy runs a stacked (B, T, F) @ W
    as B small products, many times slower: 30 ms against 3 ms for a (64, 12, 512) memory), on rnnfast's
    threads as :class:`Linear` (numpy's BLAS is held to one thread by the examples, and its own thread
    pool stalls on a busy machine)."""
    x2 = np.ascontiguousarray(x.reshape(-1, x.shape[-1]), w.dtype)
    out = np.empty((x2.shape[0], w.shape[0] if transpose else w.shape[1]), w.dtype)
    _k.matmul(x2, w, out, trans_b=transpose, nthreads=resolve_threads(n_threads))
    return out.reshape(x.shape[:-1] + (out.shape[-1],))


def _add_outer(g: np.ndarray, d: np.ndarray, x: np.ndarray, n_threads: int | None) -> None:
    """``g += d2.T @ x2`` over the rows of ``d`` and ``x`` flattened to 2-D (a weight's gradient), threaded."""
    d2 = np.ascontiguousarray(d.reshape(-1, d.shape[-1]), g.dtype)
    x2 = np.ascontiguousarray(x.reshape(-1, x.shape[-1]), g.dtype)
    _k.matmul(d2, x2, g, trans_a=True, beta=1.0, nthreads=resolve_threads(n_threads))


class Attention(Module):
    """Attention of queries over a (padded) sequence of keys: Luong dot / general, Bahdanau additive.

    Scores, for a query q and a key k:

    - ``"dot"``: ``q . k`` (needs ``query_size == key_size``)
    - ``"general"``: ``q . (W k)``, ``W`` = ``weight`` of shape (query_size, key_size)
    - ``"additive"``: ``v . tanh(W_q q + W_k k)``, ``W_q`` = ``query_weight`` (hidden_size, query_size),
      ``W_k`` = ``key_weight`` (hidden_size, key_size), ``v`` (hidden_size,)

    then ``weights = softmax(scores)`` over the valid keys and ``context = weights @ values``.

    Parameters
    ----------
    query_size, key_size : int
    kind : {"dot", "general", "additive"}, default "dot"
    hidden_size : int, optional
        Width of the additive score's hidden layer (default ``key_size``); only for "additive".
    dtype : float32 (default) or float64
    seed : int or numpy Generator, optional
        Seeds the weights, uniform(-1/sqrt(fan_in), 1/sqrt(fan_in)) as PyTorch's Linear.

    Examples
    --------
    >>> att = Attention(8, 8, kind="general", seed=0)
    >>> ctx, w = att(np.ones((2, 8)), np.ones((2, 5, 8)), key_lengths=[5, 3])
    >>> ctx.shape, w.shape
    ((2, 8), (2, 5))
    """

    keyword_protocol = False  # forward(query, keys, values=None, key_lengths=None): not a Sequential layer

    KINDS = ("dot", "general", "additive")

    _read_only = ("query_size", "key_size", "kind", "hidden_size", "dtype")

    def __init__(self, query_size: int, key_size: int, kind: str = "dot", hidden_size: int | None = None,
                 dtype: DTypeLike = np.float32, seed: Seed = None) -> None:
        super().__init__()
        self.query_size = check_int(query_size, "query_size", 1)
        self.key_size = check_int(key_size, "key_size", 1)
        self.kind = kind = check_option(kind, "kind", self.KINDS)
        if kind == "dot" and self.query_size != self.key_size:
            raise ValueError(f"kind='dot' needs query_size == key_size, got {self.query_size} and {self.key_size}"
                             " (use kind='general' or 'additive')")
        if hidden_size is not None and kind != "additive":
            raise ValueError("hidden_size applies only to kind='additive'")
        self.hidden_size = check_int(hidden_size, "hidden_size", 1) if hidden_size is not None else self.key_size
        self.dtype = check_float_dtype(dtype)
        rng = make_rng(seed)
        Q, K, A, dt = self.query_size, self.key_size, self.hidden_size, self.dtype

        def uniform(shape: tuple[int, ...], fan_in: int) -> np.ndarray:
            k = 1.0 / np.sqrt(fan_in)
            return rng.uniform(-k, k, shape).astype(dt)

        if kind == "general":
            self._add_param("weight", uniform((Q, K), K))
        elif kind == "additive":
            self._add_param("query_weight", uniform((A, Q), Q))
            self._add_param("key_weight", uniform((A, K), K))
            self._add_param("v", uniform((A,), A))

    # ------------------------------------------------------------------ forward
    def _check_inputs(self, query: ArrayLike, keys: ArrayLike, values: ArrayLike | None,
                      key_lengths: ArrayLike | None) -> tuple:
        dt = self.dtype
        q = as_float(query, dt, "query")
        if q.ndim == 2:
            single = True
            q = q[:, None, :]
        elif q.ndim == 3:
            single = False
        else:
            raise ValueError(f"query must be (B, Tq, query_size) or (B, query_size), got shape {q.shape}")
        if q.shape[-1] != self.query_size:
            raise ValueError(f"query has {q.shape[-1]} features, expected query_size={self.query_size}")
        k = as_float(keys, dt, "keys")
        if k.ndim != 3:
            raise ValueError(f"keys must be 3-D (B, Tk, key_size), got shape {k.shape}")
        if k.shape[-1] != self.key_size:
            raise ValueError(f"keys have {k.shape[-1]} features, expected key_size={self.key_size}")
        B, Tk = k.shape[0], k.shape[1]
        if q.shape[0] != B:
            raise ValueError(f"query and keys must have the same batch size, got {q.shape[0]} and {B}")
        if B == 0 or Tk == 0 or q.shape[1] == 0:
            raise ValueError("query and keys must hold at least one sequence and one step")
        v = None
        if values is not None:
            v = as_float(values, dt, "values")
            if v.ndim != 3 or v.shape[:2] != (B, Tk):
                raise ValueError(f"values must be 3-D with the keys' batch and steps ({B}, {Tk}, ·), got {v.shape}")
        lengths = check_lengths(key_lengths, B, Tk, "key_lengths")
        return q, k, v, lengths, single

    def project_keys(self, keys: ArrayLike, n_threads: int | None = None) -> np.ndarray | None:
        """The keys' part of the score, the same for every query: ``W k`` ("general"), ``W_k k``
        ("additive"), None ("dot"). Pass it to :meth:`forward` as ``projected_keys`` when many queries
        attend to the same keys one call at a time (decoding), so it is computed once.

        Parameters
        ----------
        keys : array (B, Tk, key_size)

        Returns
        -------
        ndarray (B, Tk, query_size) for "general", (B, Tk, hidden_size) for "additive", or None
        """
        k = as_float(keys, self.dtype, "keys")
        if k.ndim != 3 or k.shape[-1] != self.key_size:
            raise ValueError(f"keys must be 3-D (B, Tk, key_size={self.key_size}), got shape {k.shape}")
        return None if self.kind == "dot" else self._project_keys(k, n_threads)

    def _project_keys(self, k: np.ndarray, n_threads: int | None = None) -> np.ndarray:
        return _project(k, self._params["weight" if self.kind == "general" else "key_weight"], n_threads=n_threads)

    def forward(self, query: ArrayLike, keys: ArrayLike, values: ArrayLike | None = None,
                key_lengths: ArrayLike | None = None, projected_keys: np.ndarray | None = None,
                n_threads: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Attend from ``query`` over ``keys``.

        Parameters
        ----------
        query : array (B, Tq, query_size) or (B, query_size)
        keys : array (B, Tk, key_size)
        values : array (B, Tk, V), optional
            What the weights average; the keys themselves when omitted.
        key_lengths : array-like of int (B,), optional
            Valid keys of each (right-padded) sequence; padded keys get weight exactly 0.
        projected_keys : array, optional
            :meth:`project_keys` of these ``keys`` (with the current weights), to skip computing it again.
        n_threads : int, optional
            Threads of the projections (default: rnnfast's).

        Returns
        -------
        context : ndarray (B, Tq, V), or (B, V) for a 2-D query
        weights : ndarray (B, Tq, Tk), or (B, Tk) for a 2-D query
        """
        q, k, v, lengths, single = self._check_inputs(query, keys, values, key_lengths)
        vals = k if v is None else v
        B, Tk = k.shape[:2]
        cache = {"q": q, "k": k, "v": v, "single": single}
        p = self._params
        if self.kind == "dot":
            scores = q @ k.transpose(0, 2, 1)
        else:
            pk = self._checked_projection(projected_keys, k, n_threads)
            if self.kind == "general":  # pk: (B, Tk, Q), W k for every key
                scores = q @ pk.transpose(0, 2, 1)
                cache["kw"] = pk
            else:
                hid = np.tanh(_project(q, p["query_weight"], n_threads=n_threads)[:, :, None, :] + pk[:, None, :, :])
                scores = hid @ p["v"]  # (B, Tq, Tk)
                cache["hid"] = hid
        if lengths is not None:
            valid = time_mask(lengths, B, Tk)[:, None, :]
            scores = np.where(valid, scores, -np.inf)  # every row keeps >= 1 valid key, so no NaN
        scores -= scores.max(axis=-1, keepdims=True)
        w = np.exp(scores)
        w /= w.sum(axis=-1, keepdims=True)
        ctx = w @ vals
        cache["w"] = w
        self._keep(cache)
        if single:
            return ctx[:, 0], w[:, 0]
        return ctx, w

    def _checked_projection(self, projected: np.ndarray | None, k: np.ndarray, n_threads: int | None) -> np.ndarray:
        if projected is None:
            return self._project_keys(k, n_threads)
        width = self.query_size if self.kind == "general" else self.hidden_size
        projected = as_float(projected, self.dtype, "projected_keys")
        if projected.shape != k.shape[:2] + (width,):
            raise ValueError(f"projected_keys must have shape {k.shape[:2] + (width,)} (project_keys(keys)), "
                             f"got {projected.shape}")
        return projected

    def backward(self, dcontext: ArrayLike, dweights: ArrayLike | None = None, *, n_threads: int | None = None
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Gradients wrt the inputs; parameter gradients accumulate in ``grads``.

        Parameters
        ----------
        dcontext : array, the shape of ``context``
        dweights : array, the shape of ``weights``, optional
            Gradient wrt the returned attention weights (e.g. from a penalty on them).
        n_threads : int, optional
            Threads of the projections' products (default: rnnfast's).

        Returns
        -------
        dquery : ndarray, the shape of ``query``
        dkeys : ndarray (B, Tk, key_size); includes the values' part when ``values`` was omitted
        dvalues : ndarray (B, Tk, V), or None when ``values`` was omitted
        """
        c = self._take_cache()
        q, k, v, w, single = c["q"], c["k"], c["v"], c["w"], c["single"]
        vals = k if v is None else v
        B, Tq, Tk = w.shape
        ctx_shape = (B, vals.shape[-1]) if single else (B, Tq, vals.shape[-1])
        dctx = _check_grad(dcontext, ctx_shape, self.dtype, "dcontext")
        if single:
            dctx = dctx[:, None, :]
        dw = dctx @ vals.transpose(0, 2, 1)  # (B, Tq, Tk)
        if dweights is not None:
            dwx = _check_grad(dweights, (B, Tk) if single else (B, Tq, Tk), self.dtype, "dweights")
            dw = dw + (dwx[:, None, :] if single else dwx)
        dvals = w.transpose(0, 2, 1) @ dctx  # (B, Tk, V)
        # Softmax backward; masked keys have w == 0, so their score gradient is 0.
        ds = w * (dw - (dw * w).sum(axis=-1, keepdims=True))
        p, g = self._params, self.grads
        if self.kind == "dot":
            dq = ds @ k
            dk = ds.transpose(0, 2, 1) @ q
        elif self.kind == "general":
            kw = c["kw"]
            dq = ds @ kw
            dkw = ds.transpose(0, 2, 1) @ q  # (B, Tk, Q)
            _add_outer(g["weight"], dkw, k, n_threads)
            dk = _project(dkw, p["weight"], transpose=False, n_threads=n_threads)
        else:
            hid = c["hid"]
            g["v"] += ds.reshape(-1) @ hid.reshape(-1, self.hidden_size)
            dz = ds[..., None] * p["v"] * (1.0 - hid * hid)  # (B, Tq, Tk, A)
            dpq = dz.sum(axis=2)  # (B, Tq, A)
            dpk = dz.sum(axis=1)  # (B, Tk, A)
            _add_outer(g["query_weight"], dpq, q, n_threads)
            _add_outer(g["key_weight"], dpk, k, n_threads)
            dq = _project(dpq, p["query_weight"], transpose=False, n_threads=n_threads)
            dk = _project(dpk, p["key_weight"], transpose=False, n_threads=n_threads)
        if v is None:
            dk = dk + dvals
            dv = None
        else:
            dv = dvals
        if single:
            dq = dq[:, 0]
        return dq, dk, dv

    def extra_repr(self) -> str:
        hid = f", hidden_size={self.hidden_size}" if self.kind == "additive" else ""
        return f"{self.query_size}, {self.key_size}, kind={self.kind!r}{hid}, dtype={self.dtype.name}"
