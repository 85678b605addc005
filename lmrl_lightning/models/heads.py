"""Value heads over a trunk's last hidden state (spec §3.1): Q heads with one output per vocabulary token, and
scalar V heads. Heads keep fp32 parameters and compute in fp32 whatever the trunk's dtype.

Every head starts as a constant (its last layer's weights are zero, its bias is `bias_init`, about the expected
return), so early targets are not noise. Three Q parameterisations:

  linear: Q(h) = W h + b                         d*V + V parameters
  mlp:    Q(h) = W2 relu(W1 h + b1) + b2         d*d + d + d*V + V (the paper's)
  tied:   Q(h) = E mlp_d(h) + b, E = the trunk's output embedding (shared, not copied): d*d + d + d*d + d + V

At a GPT-2 vocabulary (V = 50257, d = 768) an mlp Q head holds 39.2M parameters, a tied one 1.2M plus the
shared embedding; ILQL keeps four Q heads (two online, two targets).
"""
from __future__ import annotations

import copy
import math
from typing import Callable, Literal, Optional

import torch
from torch import nn

HeadKind = Literal["linear", "mlp", "tied"]


def _lecun_normal_(weight: torch.Tensor) -> None:
    nn.init.normal_(weight, std=1.0 / math.sqrt(weight.shape[1]))


class ValueHead(nn.Module):
    """A head with `out` outputs: `forward(h) -> [..., out]`, and `at(h, index) -> [...]`, the output at `index`
    for each row, computed without the full output layer (what the losses need for a vocabulary-sized Q)."""

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def at(self, hidden: torch.Tensor, index: torch.Tensor) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError


class LinearHead(ValueHead):
    def __init__(self, dim: int, out: int, bias_init: float = 0.0):
        super().__init__()
        self.out = nn.Linear(dim, out)
        nn.init.zeros_(self.out.weight)
        nn.init.constant_(self.out.bias, bias_init)

    def forward(self, hidden):
        return self.out(hidden.float())

    def at(self, hidden, index):
        return (hidden.float() * self.out.weight[index]).sum(-1) + self.out.bias[index]


class MLPHead(ValueHead):
    """Dense(d->d), ReLU, Dense(d->out): first layer LeCun-normal, second zero weights and constant bias."""

    def __init__(self, dim: int, out: int, bias_init: float = 0.0, hidden_dim: Optional[int] = None):
        super().__init__()
        hidden_dim = hidden_dim or dim
        self.inner = nn.Linear(dim, hidden_dim)
        _lecun_normal_(self.inner.weight)
        nn.init.zeros_(self.inner.bias)
        self.out = nn.Linear(hidden_dim, out)
        nn.init.zeros_(self.out.weight)
        nn.init.constant_(self.out.bias, bias_init)

    def features(self, hidden):
        return torch.relu(self.inner(hidden.float()))

    def forward(self, hidden):
        return self.out(self.features(hidden))

    def at(self, hidden, index):
        return (self.features(hidden) * self.out.weight[index]).sum(-1) + self.out.bias[index]


class TiedQHead(ValueHead):
    """Q(h) = E g(h) + b with E the trunk's output embedding [V, d], read at call time (shared, so it trains with
    the trunk), and g an MLP d->d->d whose last layer starts at zero (so Q starts at b = bias_init)."""

    def __init__(self, dim: int, vocab: int, embedding: Callable[[], torch.Tensor], bias_init: float = 0.0):
        super().__init__()
        self.project = MLPHead(dim, dim, 0.0)
        self.bias = nn.Parameter(torch.full((vocab,), float(bias_init)))
        # A callable, not a submodule: the embedding belongs to the trunk and must not be registered twice.
        # A target copy of this head must be built with the target trunk's embedding (not deep-copied).
        self._embedding = embedding

    def forward(self, hidden):
        return self.project(hidden) @ self._embedding().float().T + self.bias

    def at(self, hidden, index):
        return (self.project(hidden) * self._embedding().float()[index]).sum(-1) + self.bias[index]


def make_q_head(
    kind: HeadKind, dim: int, vocab: int, bias_init: float = 0.0, embedding: Optional[Callable[[], torch.Tensor]] = None
) -> ValueHead:
    """A vocabulary-sized Q head; `tied` needs `embedding`, a callable returning the trunk's output embedding."""
    if kind == "linear":
        return LinearHead(dim, vocab, bias_init)
    if kind == "mlp":
        return MLPHead(dim, vocab, bias_init)
    if kind == "tied":
        if embedding is None:
            raise ValueError("a tied Q head needs the trunk's output embedding")
        return TiedQHead(dim, vocab, embedding, bias_init)
    raise ValueError(f"unknown head kind {kind!r}; valid: linear, mlp, tied")


def make_v_head(kind: HeadKind, dim: int, bias_init: float = 0.0) -> ValueHead:
    """A scalar V head (`tied` has no meaning for one output and gives an mlp head)."""
    return LinearHead(dim, 1, bias_init) if kind == "linear" else MLPHead(dim, 1, bias_init)


def frozen_copy(module: nn.Module) -> nn.Module:
    """A deep copy with gradients off: a target network, updated only by `polyak_update`."""
    target = copy.deepcopy(module)
    target.requires_grad_(False)
    return target


@torch.no_grad()
def polyak_update(target: nn.Module, online: nn.Module, alpha: float) -> None:
    """target <- (1 - alpha) * target + alpha * online, parameter by parameter (buffers copied)."""
    target_params = list(target.parameters())
    online_params = list(online.parameters())
    if len(target_params) != len(online_params):
        raise ValueError("target and online networks have different parameters")
    torch._foreach_lerp_(target_params, online_params, alpha)
    for t, o in zip(target.buffers(), online.buffers()):
        t.copy_(o)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
