"""A sequence teacher family: a causal transformer over the user's whole history (SASRec / HSTU style).

Tokens: each event's item, action, value and the time gap since the event before it, plus a learned
embedding of its distance from the most recent event (log-bucketed, so any length reads the same way).
Causal self-attention (`torch.nn.functional.scaled_dot_product_attention`: flash / memory-efficient
kernels, no L x L matrix kept) gives a state after every event. A candidate is scored target-aware from
the state after the last event, the time from that event to the request, and the candidate's item:
`(W [state, gap]) . item + bias[item]`, plus what a hard search of the history for the candidate finds
(as SIM's hard mode retrieves the events that match a candidate): how often the user's history holds the
candidate's item (log-bucketed) and how long ago it last did, embedded and read by the same query. On
repeat-purchase data that is the signal a 10-event window lacks.

The served logit is that score stacked with the hard search's plainest finding: `a * score + b * log(1 +
matches) + c * [matches > 0] + d`, the four weights fitted after training by a logistic fit on the valid window's
slates (`fit_stack`; identity until then). The sampled softmax teaches the score to pick the next item out of
mostly random negatives; the slates the teacher is asked about hold the user's own earlier items beside popular
ones, where how often the user bought the candidate ranks them (on the Instacart sample the stacked score lifts
valid AUC by about 0.04).

Training reads a user's sequence once and learns at every position at the same time: the state after
event t, with the gap to event t + 1, must pick event t + 1's item out of negatives sampled for the batch
(sampled softmax). The same scoring serves: a probability per candidate (the sigmoid of its score; the
worker calibrates it), with the same inputs as every teacher (the shared encoder's teacher view), so
Triton, the worker and the student do not change.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from recdistill.core.contracts.teacher import ScoreStack
from recdistill.core.features.schema import FIRST_KNOWN_INDEX, FeatureSchema
from recdistill.core.metrics import auc
from recdistill.core.nn import FeatureEmbedding, ModelConfig
from recdistill.core.training import EncodedSplit

GAP_BUCKETS = 24  # log1p(hours) x 2, the last one open-ended
COUNT_BUCKETS = 12  # matches of the candidate in the history: 0, 1, 2, 3-4, 5-8, ... (log2), the last open-ended
NEVER = GAP_BUCKETS  # the time-since-last-match bucket of a candidate the history does not hold
CADENCE_BUCKETS = 18  # the user's own cadence of the candidate: hours since its last match over its mean gap
POSITION_BUCKETS = 64  # 4 x log2(1 + distance from the most recent event)
UNSTACKED = (1.0, 0.0, 0.0, 0.0)  # the stack's weights [score, log(1 + matches), matches > 0, 1] before a fit
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
    own_negatives: int = 32  # and per window, items from the user's own history (repeat data's hard negatives)
    history_limit: int | None = None  # read only the most recent N events (None: all)


# From about 0.1M to over 100M parameters in the transformer (item embeddings add vocabulary x dim).
SEQUENCE_SIZES = {
    "seq-3xs": SequenceConfig(dim=4, layers=1, heads=1),
    "seq-2xs": SequenceConfig(dim=8, layers=1, heads=1),
    "seq-xs": SequenceConfig(dim=32, layers=1, heads=1),
    "seq-s": SequenceConfig(dim=64, layers=2, heads=2),
    "seq-m": SequenceConfig(dim=128, layers=4, heads=4),
    "seq-l": SequenceConfig(dim=512, layers=8, heads=8, train_len=512),
    "seq-xl": SequenceConfig(dim=1024, layers=8, heads=16, train_len=1024),
}


def gap_bucket(hours: torch.Tensor) -> torch.Tensor:
    return torch.clamp((torch.log1p(hours.clamp(min=0)) * 2).long(), 0, GAP_BUCKETS - 1)


def count_bucket(counts: torch.Tensor) -> torch.Tensor:
    return torch.clamp(torch.ceil(torch.log2(counts.float().clamp(min=0) + 1e-9)).long() + 1, 0, COUNT_BUCKETS - 1) \
        * (counts > 0)


def since_bucket(hours: torch.Tensor) -> torch.Tensor:
    """Hours since the candidate's last match (inf: never) -> bucket, NEVER for no match."""
    return torch.where(torch.isfinite(hours), gap_bucket(torch.nan_to_num(hours, posinf=0.0)),
                       torch.full_like(hours, NEVER, dtype=torch.long))


def cadence_bucket(counts: torch.Tensor, since_hours: torch.Tensor, span_hours: torch.Tensor) -> torch.Tensor:
    """Where the user stands in their own buying cycle of the candidate: hours since its last match over the
    mean gap between its matches (span / (matches - 1)), log2 in half steps from 1/16 to 16; 0 (nothing added)
    with fewer than 2 matches or no span (a history limit)."""
    cycle = span_hours / (counts.float() - 1).clamp(min=1)
    ratio = torch.nan_to_num(since_hours, posinf=0.0).clamp(min=0) / cycle.clamp(min=1.0)
    bucket = torch.clamp(torch.round(torch.log2(ratio.clamp(min=1e-3)) * 2).long() + 9, 1, CADENCE_BUCKETS - 1)
    return torch.where((counts >= 2) & torch.isfinite(span_hours), bucket, torch.zeros_like(bucket))


def history_matches(candidates: torch.Tensor, items: torch.Tensor, hours: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The hard search: for candidates [B, C] in histories [B, L] (0: padding, unseen items never match)
    with each event's hours to the request [B, L]: (matches [B, C], hours since the last match [B, C], inf
    for none, hours from the first match to the last [B, C])."""
    eq = (candidates.unsqueeze(-1) == items.unsqueeze(1)) & (items >= FIRST_KNOWN_INDEX).unsqueeze(1)
    since = torch.where(eq, hours.unsqueeze(1), torch.full_like(hours, float("inf")).unsqueeze(1)).amin(-1)
    first = torch.where(eq, hours.unsqueeze(1), torch.zeros_like(hours).unsqueeze(1)).amax(-1)
    counts = eq.sum(-1)
    return counts, since, torch.where(counts > 0, first - torch.nan_to_num(since, posinf=0.0), 0.0)


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

    def forward(self, h: torch.Tensor, band: torch.Tensor | None = None) -> torch.Tensor:
        """`band`: a boolean [L, L] mask (a causal window) in place of the plain causal one."""
        b, length, d = h.shape
        q, k, v = self.qkv(self.norm1(h)).view(b, length, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        attended = F.scaled_dot_product_attention(q, k, v, attn_mask=band, is_causal=band is None,
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
        # The hard search's findings, read by the query. No match adds nothing (the padding rows stay 0), and
        # the rest start at 0: on data without repeats the model is the plain one.
        self.match_count = nn.Embedding(COUNT_BUCKETS, d, padding_idx=0)
        self.match_since = nn.Embedding(GAP_BUCKETS + 1, d, padding_idx=NEVER)
        self.match_bias = nn.Embedding(COUNT_BUCKETS, 1, padding_idx=0)
        self.match_cadence = nn.Embedding(CADENCE_BUCKETS, d, padding_idx=0)
        self.cadence_bias = nn.Embedding(CADENCE_BUCKETS, 1, padding_idx=0)
        for table in (self.match_count, self.match_since, self.match_bias, self.match_cadence, self.cadence_bias):
            nn.init.zeros_(table.weight)
        # The served logit's stack (see the module's doc): a buffer, never trained by the sampled softmax.
        self.register_buffer("stack", torch.tensor(UNSTACKED))
        self.register_load_state_dict_pre_hook(_unstacked_if_missing)

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
        band = None
        if self.config.history_limit is not None and items.shape[1] > self.config.history_limit:
            # Training windows longer than the limit: each position attends to its most recent `limit` events.
            distance = index.T - index  # [L, L]: i - j
            band = (distance >= 0) & (distance < self.config.history_limit)
        for block in self.blocks:
            h = block(h, band)
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

    def score_matches(self, queries: torch.Tensor, counts: torch.Tensor, since_hours: torch.Tensor,
                      span_hours: torch.Tensor) -> torch.Tensor:
        """What the hard search found for [..., C] candidates (matches, hours since the last, inf: none; hours
        from the first to the last, NaN: not known), read by their [..., d] queries: logits [..., C] added to the
        item scores. (The query meets each bucket's embedding once, then every candidate picks its buckets:
        O(C) a query, not O(C x d).)"""
        buckets, since = count_bucket(counts), since_bucket(since_hours)
        cadence = cadence_bucket(counts, since_hours, span_hours)
        scale = math.sqrt(self.config.dim)
        by_count = (queries @ self.match_count.weight.T) / scale + self.match_bias.weight.T  # [..., COUNT_BUCKETS]
        by_since = (queries @ self.match_since.weight.T) / scale  # [..., GAP_BUCKETS + 1]
        by_cadence = (queries @ self.match_cadence.weight.T) / scale + self.cadence_bias.weight.T
        return by_count.gather(-1, buckets) + by_since.gather(-1, since) + by_cadence.gather(-1, cadence)

    # ---- serving: the shared encoder's teacher view ---------------------------------------------------
    def unstacked(self, **x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The score before the stack [B, C] and the candidates' matches in the history read [B, C]."""
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
        queries = self.queries(state, to_request)
        counts, since, span = history_matches(x["cand_item"], items, hours)
        if self.config.history_limit is not None:  # trained without the cadence (see `_Window.matches`)
            span = torch.full_like(span, float("nan"))
        return self.score(queries, x["cand_item"]) + self.score_matches(queries, counts, since, span), counts

    def stacked(self, scores: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        """The served logit: the stack's weights over `stack_features`."""
        return stack_features(scores, counts) @ self.stack.to(scores.dtype)

    def logits(self, **x: torch.Tensor) -> torch.Tensor:
        return self.stacked(*self.unstacked(**x))

    def forward(self, **x: torch.Tensor) -> torch.Tensor:
        """Probabilities [B, C]."""
        return torch.sigmoid(self.logits(**x))

    def parameters_without_items(self) -> int:
        """The transformer's parameters (what its size names), without the vocabulary's embeddings."""
        items = self.embed.item.weight.numel() + self.item_bias.weight.numel()
        return sum(p.numel() for p in self.parameters()) - items


def stack_features(scores: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """[..., 4]: the score, log(1 + matches), matches > 0, 1 - what the stack weighs, in serving and in its fit."""
    return torch.stack([scores, torch.log1p(counts.to(scores.dtype)), (counts > 0).to(scores.dtype),
                        torch.ones_like(scores)], dim=-1)


def _unstacked_if_missing(module: nn.Module, state_dict: dict[str, torch.Tensor], prefix: str, *_: object) -> None:
    """A checkpoint written before the stack loads as the unstacked score it served."""
    state_dict.setdefault(prefix + "stack", torch.tensor(UNSTACKED))


def fit_stack(model: SequenceTeacher, valid: EncodedSplit,
              batch_size: int = 1_024) -> tuple[ScoreStack, tuple[np.ndarray, np.ndarray]]:
    """The stack's weights by a logistic fit (L-BFGS on the log-loss) over `valid`'s candidates, the model's
    scores and matches held fixed; kept only where they lift the pooled valid AUC (else the identity stays).
    With it, what the model now serves on `valid` (probabilities [N, C] and the candidate mask, as
    `training.predict` gives them), so that valid's metrics need no second pass of the model."""
    model.eval()
    rows, width = valid.labels.shape
    unstacked = (np.zeros((rows, width), np.float32), np.zeros((rows, width), np.int64))
    mask = np.zeros((rows, width), dtype=bool)
    with torch.no_grad():
        for batch in valid.batches(batch_size):
            score, matches = model.unstacked(**batch.inputs)
            unstacked[0][batch.rows, : score.shape[1]] = score.numpy()
            unstacked[1][batch.rows, : score.shape[1]] = matches.numpy()
            mask[batch.rows, : score.shape[1]] = batch.mask.numpy()
    score, matches = (torch.from_numpy(a[mask]).double() for a in unstacked)
    label = torch.from_numpy(valid.labels[mask]).double()
    features = stack_features(score, matches)
    weights = torch.tensor(UNSTACKED, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([weights], max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.binary_cross_entropy_with_logits(features @ weights, label)
        loss.backward()
        return loss

    optimizer.step(closure)
    fitted = weights.detach()
    before = auc(label.numpy(), score.numpy())
    after = auc(label.numpy(), (features @ fitted).numpy()) if torch.isfinite(fitted).all() else -1.0
    kept = after > before
    if kept:
        model.stack.copy_(fitted.float())
    with torch.no_grad():
        served = torch.sigmoid(model.stacked(*map(torch.from_numpy, unstacked))).numpy()
    return ScoreStack(weights=tuple(round(float(w), 6) for w in (fitted if kept else torch.tensor(UNSTACKED))),
                      valid_auc_before=round(before, 6), valid_auc_after=round(after, 6), kept=kept), (served, mask)
