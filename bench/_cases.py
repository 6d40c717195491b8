"""Shapes, FLOP counts and reference weights shared by the benchmarks of this folder.

``compare.py`` (named shapes against every peer), ``grid.py`` (the shape grid), ``profile_kernels.py`` and the
pytest-benchmark suite ``test_bench_recurrent.py`` import this module; it depends on numpy only.

FLOPs: 2*G*H*(F + H) per time step and sequence forward, per layer and direction, where G is the number of
gates (LSTM 4, GRU 3, RNN 1) and F the features a layer reads (I for the first layer, D*H for the others);
training (forward + backward) counts 3x the forward.
"""
from __future__ import annotations

import dataclasses

import numpy as np

GATES = {"lstm": 4, "gru": 3, "rnn": 1}
CELLS = tuple(GATES)
MODES = ("infer", "train")
TRAIN_FACTOR = 3.0  # forward + backward = 3x the forward's FLOPs (two products per forward one)

# The named shapes of compare.py and the pytest-benchmark suite: name -> (B, T, I, H).
SHAPES = {
    "small": (32, 50, 64, 128),
    "medium": (64, 100, 128, 256),
    "large": (128, 100, 512, 512),
    "latency": (1, 100, 128, 256),
}
STEP_SHAPE = (1, 128, 256)  # B, I, H of the streaming-step case


def flop_forward(cell: str, I: int, H: int, layers: int = 1, D: int = 1, tokens: float = 1) -> float:
    """Forward FLOPs of a stack of ``layers`` layers (``D`` directions) over ``tokens`` valid time steps.

    Parameters
    ----------
    cell : {"lstm", "gru", "rnn"}
    I, H : int
        Input features of the first layer and hidden units.
    layers, D : int
        Layers in the stack and directions per layer (2: bidirectional; a later layer then reads 2H features).
    tokens : float
        Valid (sequence, time step) pairs: B*T for full-length sequences.
    """
    G = GATES[cell]
    total = 0.0
    for layer in range(layers):
        F = I if layer == 0 else D * H
        total += D * 2.0 * G * H * (F + H) * tokens
    return total


def flop(cell: str, I: int, H: int, layers: int = 1, D: int = 1, tokens: float = 1, mode: str = "infer") -> float:
    """FLOPs of one call: :func:`flop_forward`, times :data:`TRAIN_FACTOR` when ``mode == "train"``."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    f = flop_forward(cell, I, H, layers, D, tokens)
    return f * TRAIN_FACTOR if mode == "train" else f


@dataclasses.dataclass(frozen=True)
class Shape:
    """One benchmark shape: a recurrent stack run over a (B, T, I) batch-first input.

    ``mode`` is "infer" (eval-mode forward) or "train" (forward + backward of the sum of the outputs).
    """

    cell: str
    B: int
    T: int
    I: int
    H: int
    layers: int = 1
    bidirectional: bool = False
    mode: str = "infer"

    def __post_init__(self):
        if self.cell not in GATES:
            raise ValueError(f"cell must be one of {CELLS}, got {self.cell!r}")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        for k in ("B", "T", "I", "H", "layers"):
            v = getattr(self, k)
            if not isinstance(v, int) or isinstance(v, bool):
                raise TypeError(f"{k} must be an int, got {type(v).__name__}")
            if v < 1:
                raise ValueError(f"{k} must be at least 1, got {v}")

    @property
    def D(self) -> int:
        """Directions per layer."""
        return 2 if self.bidirectional else 1

    @property
    def flop(self) -> float:
        """FLOPs of one call (full-length sequences)."""
        return flop(self.cell, self.I, self.H, self.layers, self.D, self.B * self.T, self.mode)

    @property
    def name(self) -> str:
        """e.g. ``lstm-B2-T100-I256-H512-L1-uni-train``."""
        return (f"{self.cell}-B{self.B}-T{self.T}-I{self.I}-H{self.H}-L{self.layers}-"
                f"{'bi' if self.bidirectional else 'uni'}-{self.mode}")


def state_dict(cell: str, I: int, H: int, layers: int = 1, bidirectional: bool = False,
               seed: int = 42) -> dict[str, np.ndarray]:
    """Reference weights in PyTorch's keys and layout, float32, uniform(-1/sqrt(H), 1/sqrt(H)).

    Drawn from ``numpy.random.default_rng(seed)`` in PyTorch's parameter order (per layer, per direction:
    weight_ih, weight_hh, bias_ih, bias_hh), so every benchmark hands every library the same numbers.
    """
    G, D = GATES[cell], (2 if bidirectional else 1)
    rng = np.random.default_rng(seed)
    k = 1.0 / np.sqrt(H)
    sd = {}
    for layer in range(layers):
        F = I if layer == 0 else D * H
        for d in range(D):
            sfx = f"_l{layer}" + ("_reverse" if d else "")
            sd["weight_ih" + sfx] = rng.uniform(-k, k, (G * H, F)).astype(np.float32)
            sd["weight_hh" + sfx] = rng.uniform(-k, k, (G * H, H)).astype(np.float32)
            sd["bias_ih" + sfx] = rng.uniform(-k, k, (G * H,)).astype(np.float32)
            sd["bias_hh" + sfx] = rng.uniform(-k, k, (G * H,)).astype(np.float32)
    return sd
