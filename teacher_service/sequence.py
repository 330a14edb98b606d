"""A sequence teacher family: a causal transformer over the user's whole history (SASRec / HSTU style).

Tokens: each event's item, action, value and the time gap since the event before it, plus a learned
embedding of its distance from the most recent event (log-bucketed, so any length reads the same way).
Causal self-attention (`torch.nn.functional.scaled_dot_product_attention`: flash / memory-efficient
kernels, no L x L matrix kept) gives a state after every event. A candidate is scored target-aware from
the state after the last event, the time from that event to the request, and the candidate's item:
`(W [state, gap]) . item + bias[item]`.

Training reads a user's sequence once and learns at every position at the same time: the state after
event t, with the gap to event t + 1, must pick event t + 1's item out of negatives sampled for the batch
(sampled softmax). The same scoring serves: a probability per candidate (the sigmoid of its score; the
worker calibrates it), with the same inputs as every teacher (the shared encoder's teacher view), so
Triton, the worker and the student do not change.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from recdistill.core.features.schema import FeatureSchema
from recdistill.core.nn import FeatureEmbedding, ModelConfig

GAP_BUCKETS = 24  # log1p(hours) x 2, the last one open-ended
POSITION_BUCKETS = 64  # 4 x log2(1 + distance from the most recent event)
HISTORY_INPUTS = ("hist_item", "hist_action", "hist_value", "hist_recency")


@dataclass(frozen=True)
class SequenceConfig(ModelConfig):
    dim: int = 64
    layers: int = 2
    heads: int = 2
    ff_mult: int = 4
    dropout: float = 0.1
    oov_dropout: float = 0.05
    train_len: int = 200  # a user's training sequence is read in windows of this many events
    negatives: int = 128  # sampled-softmax negatives, shared by every position of a batch
    history_limit: int | None = None  # read only the most recent N events (None: all)


# From about 0.1M to over 100M parameters in the transformer (item embeddings add vocabulary x dim).
SEQUENCE_SIZES = {
    "seq-xs": SequenceConfig(dim=32, layers=1, heads=1),
    "seq-s": SequenceConfig(dim=64, layers=2, heads=2),
    "seq-m": SequenceConfig(dim=128, layers=4, heads=4),
    "seq-l": SequenceConfig(dim=512, layers=8, heads=8, train_len=512),
    "seq-xl": SequenceConfig(dim=1024, layers=8, heads=16, train_len=1024),
}


def gap_bucket(hours: torch.Tensor) -> torch.Tensor:
    return torch.clamp((torch.log1p(hours.clamp(min=0)) * 2).long(), 0, GAP_BUCKETS - 1)


def position_bucket(distance: torch.Tensor) -> torch.Tensor:
    return torch.clamp((torch.log2(1 + distance.clamp(min=0).float()) * 4).long(), 0, POSITION_BUCKETS - 1)


class _Block(nn.Module):
    """Pre-norm causal self-attention and feed-forward."""

    def __init__(self, dim: int, heads: int, ff_mult: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.ff = nn.Sequential(nn.Linear(dim, ff_mult * dim), nn.GELU(), nn.Linear(ff_mult * dim, dim))
        self.dropout = dropout

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        b, length, d = h.shape
        q, k, v = self.qkv(self.norm1(h)).view(b, length, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        attended = F.scaled_dot_product_attention(q, k, v, is_causal=True,
                                                  dropout_p=self.dropout if self.training else 0.0)
        h = h + F.dropout(self.out(attended.transpose(1, 2).reshape(b, length, d)), self.dropout, self.training)
        return h + F.dropout(self.ff(self.norm2(h)), self.dropout, self.training)


class SequenceTeacher(nn.Module):
    def __init__(self, schema: FeatureSchema, config: SequenceConfig, view: str = "teacher") -> None:
        super().__init__()
        if config.dim % config.heads:
            raise ValueError(f"dim {config.dim} must divide into {config.heads} heads")
        self.config = config
        d = config.dim
        # Item, action and value embeddings of the shared feature embedding (its user and side features
        # are not read: the history carries the user).
        self.embed = FeatureEmbedding(schema, view, d, 1, config.oov_dropout)
        self.gap = nn.Embedding(GAP_BUCKETS, d)
        self.position = nn.Embedding(POSITION_BUCKETS, d)
        self.blocks = nn.ModuleList(_Block(d, config.heads, config.ff_mult, config.dropout)
                                    for _ in range(config.layers))
        self.norm = nn.LayerNorm(d)
        self.query = nn.Linear(2 * d, d)  # [state, gap to the request] -> the candidate query
        self.item_bias = nn.Embedding(schema.vocab_size("item_id"), 1)
        nn.init.zeros_(self.item_bias.weight)

    # ---- the sequence ------------------------------------------------------------------------------
    def states(self, items: torch.Tensor, actions: torch.Tensor | None, values: torch.Tensor | None,
               gap_hours: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """The state after every event [B, L, d]: histories left-aligned, `lengths` real events each
        (padding after them, which causal attention keeps out of every real position)."""
        tokens = self.embed._items(items) + self.gap(gap_bucket(gap_hours))
        if actions is not None and self.embed.action is not None:
            tokens = tokens + self.embed.action(actions)
        if values is not None and self.embed.value is not None:
            tokens = tokens + self.embed.value(values.unsqueeze(-1))
        index = torch.arange(items.shape[1], device=items.device).unsqueeze(0)
        tokens = tokens + self.position(position_bucket(lengths.unsqueeze(1) - 1 - index))
        h = F.dropout(tokens, self.config.dropout, self.training)
        for block in self.blocks:
            h = block(h)
        return self.norm(h)

    def queries(self, states: torch.Tensor, gap_hours: torch.Tensor) -> torch.Tensor:
        return self.query(torch.cat([states, self.gap(gap_bucket(gap_hours))], dim=-1))

    def score(self, queries: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """[..., d] queries against their own [..., C] items: logits [..., C]."""
        return (queries.unsqueeze(-2) * self.embed.item(items)).sum(-1) / math.sqrt(self.config.dim) \
            + self.item_bias(items).squeeze(-1)

    def score_shared(self, queries: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """[..., d] queries against the same K items each (sampled negatives): logits [..., K]."""
        return queries @ self.embed.item(items).T / math.sqrt(self.config.dim) + self.item_bias(items).squeeze(-1)

    # ---- serving: the shared encoder's teacher view ---------------------------------------------------
    def logits(self, **x: torch.Tensor) -> torch.Tensor:
        items = x["hist_item"]
        lengths = (items > 0).sum(dim=1)
        if self.config.history_limit is not None:  # only the most recent events (histories are left-aligned)
            width = min(self.config.history_limit, items.shape[1])
            start = (lengths - width).clamp(min=0)
            index = (start.unsqueeze(1) + torch.arange(width, device=items.device)).clamp(max=items.shape[1] - 1)
            x = {k: v.gather(1, index) if k in HISTORY_INPUTS else v for k, v in x.items()}
            lengths = lengths.clamp(max=width)
            items = x["hist_item"] * (torch.arange(width, device=items.device).unsqueeze(0) < lengths.unsqueeze(1))
        hours = torch.expm1(x["hist_recency"].float()).clamp(min=0)  # hours from each event to the request
        previous = torch.cat([hours[:, :1], hours[:, :-1]], dim=1)
        gaps = (previous - hours).clamp(min=0)  # hours since the event before (0 for the first)
        states = self.states(items, x.get("hist_action"), x.get("hist_value"), gaps, lengths)
        last = (lengths - 1).clamp(min=0)
        state = states.gather(1, last.view(-1, 1, 1).expand(-1, 1, states.shape[-1])).squeeze(1)
        state = state * (lengths > 0).unsqueeze(-1)  # an empty history: no state
        to_request = hours.gather(1, last.view(-1, 1)).squeeze(1) * (lengths > 0)
        return self.score(self.queries(state, to_request), x["cand_item"])

    def forward(self, **x: torch.Tensor) -> torch.Tensor:
        """Probabilities [B, C]."""
        return torch.sigmoid(self.logits(**x))

    def parameters_without_items(self) -> int:
        """The transformer's parameters (what its size names), without the vocabulary's embeddings."""
        items = self.embed.item.weight.numel() + self.item_bias.weight.numel()
        return sum(p.numel() for p in self.parameters()) - items
