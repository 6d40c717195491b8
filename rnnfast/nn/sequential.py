"""Sequential composition of layers, PyTorch's ``torch.nn.Sequential`` for forward/backward layers."""
from rnnfast._validation import check_bool
from rnnfast.nn.layers import LastStep
from rnnfast.nn.module import BackwardStateError, Module, call_backward, validate_state_dict

__all__ = ["Sequential"]


def _keywords(layer):
    return getattr(layer, "keyword_protocol", False)


def _last_step(layer, head, x, lengths, n_threads):
    """``head(layer(x)[0])`` when ``head`` is an eval-mode :class:`LastStep` that takes each sequence's last
    step as the recurrent ``layer``'s final states hold it (``head.bidirectional`` equal to the layer's), run
    as one call that never unpacks the layer's whole output (``_forward_last``); None otherwise, and nothing
    run. The result equals the two calls' bit for bit."""
    if type(head) is not LastStep or head.training:
        return None
    fwd = getattr(type(layer), "_forward_last", None)
    if fwd is None or getattr(layer, "bidirectional", None) != head.bidirectional:
        return None
    res = fwd(layer, x, lengths=lengths, n_threads=n_threads)
    if res is not None:
        head._keep(None)  # (what its eval-mode forward keeps)
    return res


class Sequential(Module):
    """Layers applied one after another; backward runs them in reverse.

    Any object with ``forward`` and ``backward`` can be a layer; parameters, gradients and modes are
    handled through the layer protocol (``state_dict``, ``load_state_dict``, ``named_parameters``,
    ``grads``, ``zero_grad``, ``train``), each used when the layer has it.

    - A layer whose ``forward`` returns a tuple (the recurrent layers return ``(out, state)``) passes only
      its first element on; its ``backward`` result's first element is passed back (no state gradient).
    - ``lengths`` and ``n_threads`` given to :meth:`forward` go to every layer that follows the layer
      protocol (``keyword_protocol``, every :class:`Module`: ``forward(x, *, lengths=None, n_threads=None)``);
      any other object is called ``forward(x)`` and ``backward(dout)``.
    - Parameter names are prefixed with the layer's index: ``"0.weight"``, ``"1.weight_ih_l0"``.
    - In eval mode a recurrent layer followed by a :class:`LastStep` whose ``bidirectional`` is the layer's (the
      estimators' networks) runs as one call that takes the head's result from the layer's final states
      instead of unpacking the whole (B, T, D H) output; results are the same bit for bit.

    Parameters
    ----------
    *layers : layer objects

    Examples
    --------
    >>> from rnnfast.nn import Embedding, LSTM, LastStep, Linear
    >>> model = Sequential(Embedding(100, 8, padding_idx=0), LSTM(8, 16), LastStep(), Linear(16, 3))
    >>> logits = model(np.array([[5, 7, 0], [3, 0, 0]]), lengths=[2, 1])
    >>> logits.shape
    (2, 3)
    >>> sorted(model.state_dict())[:2]
    ['0.weight', '1.bias_hh_l0']
    """

    _per_thread = ("_tuple_out",)  # what forward keeps for backward, per thread (see rnnfast.nn.module)

    def __init__(self, *layers):
        # No Module.__init__: parameters and gradients live in the layers (``grads`` is a property here).
        if len(layers) == 1 and isinstance(layers[0], (list, tuple)):
            layers = tuple(layers[0])
        for i, layer in enumerate(layers):
            for meth in ("forward", "backward"):
                if not callable(getattr(layer, meth, None)):
                    raise TypeError(f"layer {i} ({type(layer).__name__}) has no {meth}() method")
        self.layers = list(layers)
        self.training = True
        self._tuple_out = None

    _TRANSIENT = {"_tuple_out": lambda: None}  # pickling leaves it out (rnnfast.nn.Module)

    def release_memory(self) -> None:
        """Drop what every layer keeps between calls (:meth:`rnnfast.nn.LSTM.release_memory`: workspaces,
        batch layouts, a training forward's caches). Results do not change; the next call allocates again."""
        self._tuple_out = None
        for layer in self.layers:
            release = getattr(layer, "release_memory", None)
            if callable(release):
                release()

    # ------------------------------------------------------------------ container
    def __len__(self):
        return len(self.layers)

    def __iter__(self):
        return iter(self.layers)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return Sequential(*self.layers[i])
        return self.layers[i]

    def find(self, kind, *, last: bool = False):
        """The first (or ``last``) layer that is a ``kind``, looking inside :class:`Stateful` wrappers.

        Parameters
        ----------
        kind : type or tuple of types
        last : bool, default False

        Returns
        -------
        layer or None
            The unwrapped layer (e.g. the LSTM inside ``Stateful(LSTM(...))``), or None when there is none.
        """
        from rnnfast.nn.stateful import unwrap
        layers = [unwrap(layer) for layer in self.layers]
        found = [layer for layer in layers if isinstance(layer, kind)]
        return (found[-1] if last else found[0]) if found else None

    def __repr__(self):
        if not self.layers:
            return "Sequential()"
        inner = "\n".join(f"  ({i}): {layer!r}" for i, layer in enumerate(self.layers))
        return f"Sequential(\n{inner}\n)"

    # ------------------------------------------------------------------ forward / backward
    def forward(self, x, lengths=None, n_threads=None):
        """Run the layers in order.

        Parameters
        ----------
        x : array-like
            Input of the first layer.
        lengths : array-like of int (B,), optional
            Valid steps of each right-padded sequence, given to the layers that take ``lengths``.
        n_threads : int, optional
            Given to the layers that take it (the recurrent ones).

        Returns
        -------
        The last layer's output (its first element, if it returns a tuple).
        """
        tuple_out = []
        layers, i = self.layers, 0
        while i < len(layers):
            layer = layers[i]
            fused = not self.training and i + 1 < len(layers)
            out = _last_step(layer, layers[i + 1], x, lengths, n_threads) if fused else None
            if out is not None:  # the recurrent layer and its LastStep head in one (eval mode)
                i += 1
            elif _keywords(layer):
                out = layer.forward(x, lengths=lengths, n_threads=n_threads)
            else:
                out = layer.forward(x)
            is_tuple = isinstance(out, tuple)
            tuple_out.append(is_tuple)
            x = out[0] if is_tuple else out
            i += 1
        self._tuple_out = tuple_out if self.training else None
        return x

    def backward(self, dout, n_threads=None):
        """Backpropagate ``dout`` through the layers in reverse; gradients accumulate in the layers.

        Parameters
        ----------
        dout : array, the shape of the output of the last :meth:`forward`
        n_threads : int, optional

        Returns
        -------
        The gradient wrt the input of the first layer (None when that layer is an :class:`Embedding`).
        """
        tuple_out = self._tuple_out
        if tuple_out is None:
            raise BackwardStateError("Sequential.backward() needs a preceding forward() in training mode in "
                                     "this thread (each thread's backward differentiates its own forward)")
        self._tuple_out = None
        d = dout
        for i in range(len(self.layers) - 1, -1, -1):
            layer = self.layers[i]
            if d is None:
                raise ValueError(f"layer {i + 1} ({type(self.layers[i + 1]).__name__}) returned no input "
                                 f"gradient, so layer {i} ({type(layer).__name__}) cannot be differentiated")
            res = call_backward(layer, d, n_threads)
            d = res[0] if tuple_out[i] and isinstance(res, tuple) else res
        return d

    # ------------------------------------------------------------------ parameters
    def state_dict(self):
        """Copies of all parameters, keyed ``"<index>.<name>"``.

        Returns
        -------
        dict of str to numpy.ndarray
        """
        sd = {}
        for i, layer in enumerate(self.layers):
            if hasattr(layer, "state_dict"):
                for k, v in layer.state_dict().items():
                    sd[f"{i}.{k}"] = v
        return sd

    def load_state_dict(self, state_dict):
        """Load all parameters; keys as :meth:`state_dict`.

        Everything is validated (keys, shapes, real-numeric values) before any layer is touched, and a
        layer that still fails has every layer restored, so nothing changes on error.

        Raises
        ------
        ValueError
            Missing or unexpected keys, or a wrong shape.
        TypeError
            ``state_dict`` is not a mapping or a value is not real-numeric.
        """
        current = self.state_dict()
        validate_state_dict(state_dict, current)
        parts = {i: {} for i, layer in enumerate(self.layers) if hasattr(layer, "load_state_dict")}
        for key in current:
            i, name = key.split(".", 1)
            parts[int(i)][name] = state_dict[key]
        done = []
        try:
            for i, sd in parts.items():
                self.layers[i].load_state_dict(sd)
                done.append(i)
        except Exception:
            for i in done:  # roll back: the snapshot passed validation before, it loads again
                prefix = f"{i}."
                self.layers[i].load_state_dict({k[len(prefix):]: v for k, v in current.items()
                                                if k.startswith(prefix)})
            raise

    def named_parameters(self):
        """(``"<index>.<name>"``, live array) pairs of every layer's parameters.

        Returns
        -------
        list of (str, numpy.ndarray)
        """
        out = []
        for i, layer in enumerate(self.layers):
            if hasattr(layer, "named_parameters"):
                out.extend((f"{i}.{k}", p) for k, p in layer.named_parameters())
        return out

    @property
    def grads(self):
        """Every layer's live gradient arrays, keyed as :meth:`state_dict` (dict of str to ndarray)."""
        out = {}
        for i, layer in enumerate(self.layers):
            for k, g in getattr(layer, "grads", {}).items():
                out[f"{i}.{k}"] = g
        return out

    def zero_grad(self):
        """Zero every layer's gradients."""
        for layer in self.layers:
            if hasattr(layer, "zero_grad"):
                layer.zero_grad()

    # ------------------------------------------------------------------ saving
    def save(self, path) -> None:
        """Write the layers (their classes and constructor arguments) and parameters to ``path``.

        The file is rnnfast's pickle-free format (:mod:`rnnfast.io`, kind ``"nn.Sequential"``), written
        atomically; :func:`rnnfast.load` returns an equal Sequential from it (in eval mode). The layers must be
        rnnfast's own (``rnnfast.nn`` layers and :class:`~rnnfast.nn.Stateful` wrappers); random streams
        (dropout masks) and carried states are not saved.

        Parameters
        ----------
        path : str or os.PathLike
            Its directory must exist.

        Raises
        ------
        TypeError
            A layer that is not one of rnnfast's (save its ``state_dict()`` with
            :func:`rnnfast.io.save_archive` instead).
        """
        from rnnfast.nn._serial import save_sequential
        save_sequential(self, path)

    def train(self, mode=True):
        """Set training (``mode=True``) or eval mode on every layer. Returns self (TypeError for a non-bool)."""
        self.training = check_bool(mode, "mode")
        if not self.training:
            self._tuple_out = None
        for layer in self.layers:
            if hasattr(layer, "train"):
                layer.train(self.training)
        return self
