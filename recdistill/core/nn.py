"""Torch building blocks over the encoder's tensors, shared by the teacher and the students."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any, Self

import torch
from torch import nn

from recdistill.core.features.schema import OOV_INDEX, FeatureSchema

RECENCY_BUCKETS = 16


class ModelConfig:
    """Mixin for a model's frozen dataclass config: JSON round trip (tuples become lists and back)."""

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


def recency_bucket(hist_recency: torch.Tensor) -> torch.Tensor:
    """log1p(hours) in [0, ~10] -> 16 buckets of width 2/3 (the last one open-ended)."""
    return torch.clamp((hist_recency * 1.5).long(), 0, RECENCY_BUCKETS - 1)


Inputs = dict[str, torch.Tensor]


class FeatureEmbedding(nn.Module):
    """Embeds a view's users, candidates and history events, for any schema (the input groups the
    encoder produces); item embeddings are shared by candidates and history.

    A user id is a model feature only where the schema declares one: most users of a later time window
    are unseen in training, and the history carries what an id would.
    `oov_dropout`: in training, this share of known item ids is replaced by the OOV id, so that the OOV
    row learns what an unseen item looks like (it never occurs in training otherwise).
    """

    def __init__(self, schema: FeatureSchema, view: str, dim: int, user_dim: int, oov_dropout: float = 0.0) -> None:
        super().__init__()
        groups = schema.groups(view)
        self.dim = dim
        self.oov_dropout = oov_dropout
        self.item = nn.Embedding(schema.vocab_size("item_id"), dim, padding_idx=0)
        self.has_action, self.has_value, self.has_time_gap = groups.has_action, groups.has_value, groups.has_time_gap
        self.action = nn.Embedding(schema.vocab_size("action"), dim, padding_idx=0) if groups.has_action else None
        self.value = nn.Linear(1, dim, bias=False) if groups.has_value else None
        self.recency = nn.Embedding(RECENCY_BUCKETS, dim)
        self.users = nn.ModuleList(nn.Embedding(f.rows, user_dim, padding_idx=0) for f in groups.user_cat)
        self.user_numbers = len(groups.user_num)
        self.item_cats = nn.ModuleList(nn.Embedding(f.rows, dim, padding_idx=0) for f in groups.cand_cat)
        self.multi = nn.Linear(groups.multi_width, dim, bias=False) if groups.multi_width else None
        self.numbers = nn.Linear(len(groups.cand_num), dim, bias=False) if groups.cand_num else None
        self.user_out = user_dim * len(groups.user_cat) + self.user_numbers
        self.num_actions = schema.vocab_size("action") if groups.has_action else 0

    def user(self, x: Inputs) -> torch.Tensor:  # [B, user_out]
        parts = [table(x["user_cat"][:, i]) for i, table in enumerate(self.users)]
        if self.user_numbers:
            parts.append(x["user_num"])
        if not parts:
            return x["hist_length"][:, :0]
        return torch.cat(parts, dim=-1)

    def _items(self, ids: torch.Tensor) -> torch.Tensor:
        if self.training and self.oov_dropout > 0:
            drop = (torch.rand(ids.shape, device=ids.device) < self.oov_dropout) & (ids > OOV_INDEX)
            ids = torch.where(drop, torch.full_like(ids, OOV_INDEX), ids)
        return self.item(ids)

    def candidates(self, x: Inputs) -> torch.Tensor:  # [B, C, d]
        out = self._items(x["cand_item"])
        for i, table in enumerate(self.item_cats):
            out = out + table(x["cand_cat"][..., i])
        if self.multi is not None:
            out = out + self.multi(x["cand_multi"])
        if self.numbers is not None:
            out = out + self.numbers(x["cand_num"])
        return out

    def history(self, x: Inputs) -> tuple[torch.Tensor, torch.Tensor]:  # tokens [B, L, d], mask [B, L] float
        mask = (x["hist_item"] > 0).float()
        tokens = self._items(x["hist_item"]) + self.recency(recency_bucket(x["hist_recency"]))
        if self.action is not None:
            tokens = tokens + self.action(x["hist_action"])
        if self.value is not None:
            tokens = tokens + self.value(x["hist_value"].unsqueeze(-1))
        return tokens * mask.unsqueeze(-1), mask

    def action_distribution(self, x: Inputs, mask: torch.Tensor) -> torch.Tensor:
        """Share of each action (e.g. rating value) in the history: [B, A] (A = 0 without actions)."""
        if not self.num_actions:
            return mask[:, :0]
        counts = torch.zeros(mask.shape[0], self.num_actions, dtype=mask.dtype, device=mask.device)
        counts.scatter_add_(1, x["hist_action"], mask)
        return counts / mask.sum(dim=1, keepdim=True).clamp(min=1.0)


class Positional(nn.Module):
    """A model called with keyword tensors, as a module of positional ones (for ONNX export)."""

    def __init__(self, model: nn.Module, names: tuple[str, ...]) -> None:
        super().__init__()
        self.model = model
        self.names = names

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        return self.model(**dict(zip(self.names, tensors, strict=True)))


def recent_mask(mask: torch.Tensor, last: int) -> torch.Tensor:
    """The mask of the `last` most recent events (histories are left-aligned, oldest first)."""
    positions = torch.arange(mask.shape[1], device=mask.device).unsqueeze(0)
    return mask * (positions >= mask.sum(dim=1, keepdim=True) - last).float()


def masked_mean(tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (tokens * mask.unsqueeze(-1)).sum(dim=1) / mask.sum(dim=1, keepdim=True).clamp(min=1.0)


def mlp(sizes: list[int], dropout: float) -> nn.Sequential:
    layers: list[nn.Module] = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:], strict=True):
        layers += [nn.Linear(fan_in, fan_out), nn.ReLU()]
        if dropout:
            layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)
