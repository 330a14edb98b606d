"""Torch building blocks over the encoder's tensors, shared by the teacher and the students."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any, Self

import torch
from torch import nn

from recdistill.core.features.schema import OOV_INDEX, USER_CATEGORICALS, FeatureSchema

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


# The user id is left out on purpose: most users of a later time window are unseen in training, and
# the history carries what the id would. The id stays in the schema for bias towers and analysis.
USER_FEATURES = tuple(name for name in USER_CATEGORICALS if name != "user_id")


class FeatureEmbedding(nn.Module):
    """Embeds users, candidates and history events; item embeddings are shared by candidates and history.

    `oov_dropout`: in training, this share of known item ids is replaced by the OOV id, so that the OOV
    row learns what an unseen item looks like (it never occurs in training otherwise).
    """

    def __init__(self, schema: FeatureSchema, dim: int, user_dim: int, oov_dropout: float = 0.0) -> None:
        super().__init__()
        self.dim = dim
        self.oov_dropout = oov_dropout
        self.item = nn.Embedding(schema.vocab_size("item_id"), dim, padding_idx=0)
        self.action = nn.Embedding(schema.vocab_size("action"), dim, padding_idx=0)
        self.recency = nn.Embedding(RECENCY_BUCKETS, dim)
        self.genres = nn.Linear(schema.num_genres, dim, bias=False)
        self.year = nn.Linear(1, dim, bias=False)
        self.users = nn.ModuleList(
            nn.Embedding(schema.vocab_size(name), user_dim, padding_idx=0) for name in USER_FEATURES
        )
        self._user_columns = [USER_CATEGORICALS.index(name) for name in USER_FEATURES]
        self.user_out = user_dim * len(USER_FEATURES)
        self.num_actions = schema.vocab_size("action")

    def user(self, user_cat: torch.Tensor) -> torch.Tensor:  # [B, U*user_dim]
        return torch.cat([table(user_cat[:, i]) for i, table in zip(self._user_columns, self.users, strict=True)],
                         dim=-1)

    def _items(self, ids: torch.Tensor) -> torch.Tensor:
        if self.training and self.oov_dropout > 0:
            drop = (torch.rand(ids.shape, device=ids.device) < self.oov_dropout) & (ids > OOV_INDEX)
            ids = torch.where(drop, torch.full_like(ids, OOV_INDEX), ids)
        return self.item(ids)

    def candidates(self, cand_item: torch.Tensor, cand_genres: torch.Tensor, cand_year: torch.Tensor
                   ) -> torch.Tensor:  # [B, C, d]
        return self._items(cand_item) + self.genres(cand_genres) + self.year(cand_year.unsqueeze(-1))

    def history(self, hist_item: torch.Tensor, hist_action: torch.Tensor, hist_recency: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:  # tokens [B, L, d], mask [B, L] float
        mask = (hist_item > 0).float()
        tokens = self._items(hist_item) + self.action(hist_action) + self.recency(recency_bucket(hist_recency))
        return tokens * mask.unsqueeze(-1), mask

    def action_distribution(self, hist_action: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Share of each action (e.g. rating value) in the history: [B, A]."""
        counts = torch.zeros(hist_action.shape[0], self.num_actions, dtype=mask.dtype, device=mask.device)
        counts.scatter_add_(1, hist_action, mask)
        return counts / mask.sum(dim=1, keepdim=True).clamp(min=1.0)


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
