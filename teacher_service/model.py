"""A long-sequence ranking teacher.

Each candidate attends over the user's whole history (scaled dot-product target attention, as in
DIN but with a dot product instead of a per-pair MLP), next to the mean of the whole history and of
its most recent events (the short-term view a student has), the action distribution (e.g. rating
habits) over both, log(1 + history length) and the user's features; an MLP scores every candidate.
Cost is linear in the history length L for a fixed model: O(B * C * L * d) for attention,
O(B * L * d) for the tokens, so 20,000 events stay practical on a CPU (`make bench` measures it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from recdistill.core.features.schema import FeatureSchema
from recdistill.core.nn import FeatureEmbedding, ModelConfig, masked_mean, mlp, recent_mask


@dataclass(frozen=True)
class TeacherConfig(ModelConfig):
    # The defaults are the "medium" size. Which size a run uses is chosen on the valid window
    # (`recdistill.demo.teachers.choose_teacher` over the demo's `teacher_sizes`), never on test.
    dim: int = 32
    user_dim: int = 8
    hidden: tuple[int, ...] = (128, 64)
    dropout: float = 0.3
    oov_dropout: float = 0.1
    recent: int = 10  # the short-term view a student also has, next to the whole history
    # Read only the most recent N events (None: the whole history). The demo's short-history teacher
    # control: the same architecture and size on the student's 10 events, to separate what the long
    # history gives from what capacity gives.
    history_limit: int | None = None


TEACHER_SIZES = {
    "tiny": TeacherConfig(dim=16, user_dim=4, hidden=(32,), dropout=0.0),
    "medium": TeacherConfig(),
    "large": TeacherConfig(dim=128, user_dim=32, hidden=(512, 256), dropout=0.3),
}


class TeacherModel(nn.Module):
    def __init__(self, schema: FeatureSchema, config: TeacherConfig, view: str = "teacher") -> None:
        super().__init__()
        self.config = config
        self.view = view
        d = config.dim
        self.embed = FeatureEmbedding(schema, view, d, config.user_dim, config.oov_dropout)
        self.query = nn.Linear(d, d, bias=False)
        self.key = nn.Linear(d, d, bias=False)
        features = 6 * d + self.embed.user_out + 2 * self.embed.num_actions + 1
        self.body = mlp([features, *config.hidden], config.dropout)
        self.head = nn.Linear(config.hidden[-1], 1)

    def logits(self, **x: torch.Tensor) -> torch.Tensor:
        tokens, mask = self.embed.history(x)  # [B, L, d], [B, L]
        if self.config.history_limit is not None:
            mask = recent_mask(mask, self.config.history_limit)
            tokens = tokens * mask.unsqueeze(-1)
        cand = self.embed.candidates(x)  # [B, C, d]
        scores = self.query(cand) @ self.key(tokens).transpose(1, 2) / math.sqrt(self.config.dim)  # [B, C, L]
        weights = torch.softmax(scores.masked_fill(mask.unsqueeze(1) == 0, -1e9), dim=-1) * mask.unsqueeze(1)
        attended = weights @ tokens  # [B, C, d]; zeros for an empty history
        c = cand.shape[1]
        recent = recent_mask(mask, self.config.recent)
        recent_mean = masked_mean(tokens, recent)
        context = torch.cat([
            masked_mean(tokens, mask),
            recent_mean,
            self.embed.user(x),
            self.embed.action_distribution(x, mask),
            self.embed.action_distribution(x, recent),
            x["hist_length"],
        ], dim=-1).unsqueeze(1).expand(-1, c, -1)
        features = torch.cat([cand, attended, cand * attended, cand * recent_mean.unsqueeze(1), context], dim=-1)
        return self.head(self.body(features)).squeeze(-1)  # [B, C]

    def forward(self, **x: torch.Tensor) -> torch.Tensor:
        """Probabilities [B, C]."""
        return torch.sigmoid(self.logits(**x))
