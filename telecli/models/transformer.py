"""A small decoder-only transformer for token-id inputs (method.md §10.2; Nanda et al. 2023's 1-layer
model, nanoGPT's layout), in plain PyTorch.

    h⁰_l = E[x_l] + P[l]                                   token + learned position embeddings
    h ← h + Attn(LN(h)),  h ← h + MLP(LN(h))               ``blocks`` times (LN = identity unless layernorm)
    f(x) = U · LN(h_T)                                     unembedding of the last position

Attention is causal multi-head softmax attention, Attn(h) = O · concat_j softmax(q_j k_jᵀ/√d_h + mask) v_j
with [q, k, v] = W_qkv h (no biases, as Nanda et al.); the MLP is W_out φ(W_in h + b_in) + b_out.

Every parameter lives in an ``nn.Embedding``, ``nn.Linear`` (applied at every position) or ``nn.LayerNorm``,
so the structured tangent kernels of telecli.lens.kernels cover the whole network without a rule of their
own: attention's softmax only shapes the output gradients ∂f/∂(layer output) that those rules contract.

Inputs: token ids as floats (n, T) — the float64 arrays every task stores (integers are exact in float64);
``forward`` reads them with ``.long()``. The vocabulary is ``vocab`` (default ``output_dim + 1``: the P
residues and "=" of the modular task).

``trainable`` (a list of parameter-name prefixes, e.g. ``["unembed"]``) freezes every other parameter
(``requires_grad = False``): the Recorder keeps frozen parameters once and the analyses treat them as
constants, so with ``["unembed"]`` the network is linear in θ and the telescoping model is exact.

>>> net = Transformer([3], 7, d_model=8, heads=2, d_mlp=16)
>>> net(torch.tensor([[1.0, 2.0, 7.0]])).shape
torch.Size([1, 7])
"""

from __future__ import annotations

import math

import torch
from torch import nn

from telecli.errors import TelecliError
from telecli.models.mlp import ACTIVATIONS


class Attention(nn.Module):
    """Causal multi-head self-attention; the query/key/value and output maps are Linear layers."""

    def __init__(self, d_model: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=False)
        self.proj = nn.Linear(d_model, d_model, bias=False)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        n, T, d = h.shape
        q, k, v = self.qkv(h).split(d, dim=2)
        q, k, v = (t.reshape(n, T, self.heads, d // self.heads).transpose(1, 2) for t in (q, k, v))
        scores = q @ k.transpose(-2, -1) / math.sqrt(d // self.heads)
        future = torch.ones(T, T, dtype=torch.bool, device=h.device).triu(1)
        weights = torch.softmax(scores.masked_fill(future, float("-inf")), dim=-1)
        return self.proj((weights @ v).transpose(1, 2).reshape(n, T, d))


class Block(nn.Module):
    def __init__(self, d_model: int, heads: int, d_mlp: int, activation: str, layernorm: bool):
        super().__init__()
        norm = (lambda: nn.LayerNorm(d_model)) if layernorm else nn.Identity
        self.ln1, self.ln2 = norm(), norm()
        self.attn = Attention(d_model, heads)
        self.fc = nn.Linear(d_model, d_mlp)
        self.act = ACTIVATIONS[activation]()
        self.out = nn.Linear(d_mlp, d_model)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        h = h + self.attn(self.ln1(h))
        return h + self.out(self.act(self.fc(self.ln2(h))))


class Transformer(nn.Module):
    def __init__(self, input_shape, output_dim, d_model=128, heads=4, d_mlp=512, blocks=1, activation="relu",
                 layernorm=False, vocab=0, trainable=()):
        super().__init__()
        if len(input_shape) != 1:
            raise TelecliError(f"transformer: inputs must be token-id sequences (n, T), got shape {list(input_shape)}")
        if d_model % heads:
            raise TelecliError(f"transformer: d_model {d_model} is not a multiple of heads {heads}")
        if activation not in ACTIVATIONS:
            raise TelecliError(f"unknown activation '{activation}' (known: {', '.join(ACTIVATIONS)})")
        self.vocab = int(vocab) or int(output_dim) + 1
        self.embed = nn.Embedding(self.vocab, d_model)
        self.pos = nn.Embedding(int(input_shape[0]), d_model)
        self.blocks = nn.ModuleList(Block(d_model, heads, d_mlp, activation, layernorm) for _ in range(blocks))
        self.ln_f = nn.LayerNorm(d_model) if layernorm else nn.Identity()
        self.unembed = nn.Linear(d_model, output_dim, bias=False)
        self._init(d_model, d_mlp)
        self._freeze(list(trainable))

    def _init(self, d_model: int, d_mlp: int) -> None:
        """Nanda et al.'s scales: N(0, 1/d_model) for embeddings and maps from the residual stream,
        N(0, 1/d_mlp) for the MLP's output map, N(0, 1/vocab) for the unembedding; biases 0."""
        with torch.no_grad():
            for name, p in self.named_parameters():
                if name.endswith("bias"):
                    p.zero_()
                elif p.dim() == 1:  # LayerNorm weights
                    p.fill_(1.0)
                else:
                    fan = d_mlp if name.endswith("out.weight") else self.vocab if name.startswith("unembed") else d_model
                    p.normal_(0.0, 1.0 / math.sqrt(fan))

    def _freeze(self, trainable: list[str]) -> None:
        if not trainable:
            return
        names = [n for n, _ in self.named_parameters()]
        unknown = [t for t in trainable if not any(n == t or n.startswith(t + ".") for n in names)]
        if unknown:
            raise TelecliError(f"transformer: trainable {unknown} names no parameter (parameters: {', '.join(names)})")
        for n, p in self.named_parameters():
            p.requires_grad_(any(n == t or n.startswith(t + ".") for t in trainable))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ids = x.long()
        positions = torch.arange(ids.shape[1], device=ids.device).expand(ids.shape[0], -1)
        h = self.embed(ids) + self.pos(positions)
        for block in self.blocks:
            h = block(h)
        return self.unembed(self.ln_f(h[:, -1]))
