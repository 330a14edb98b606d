"""The student: small enough for the serving budget (short history, small embeddings).

What it reads of the user: its window of recent events (mean-pooled, and searched for each candidate: how
often and how recently the window holds it), and, where the view declares a user channel, a hashed user-id
embedding read against each candidate (a user x candidate term): the place where what the teacher knows about
a user's long history can be kept. A bucket no training example reached reads the learned default alone.

Decoupled heads share one bottom: the serving head learns observed labels and is the only one
exported; the auxiliary head learns the teacher's soft labels, so teacher bias reaches served scores
only through the shared bottom. Plain KD (teacher term on the serving head) remains an option.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from recdistill.core.contracts.worker import Calibration
from recdistill.core.features.schema import FIRST_KNOWN_INDEX, MISSING_INDEX, FeatureSchema
from recdistill.core.fileio import atomic_write_bytes, atomic_write_with
from recdistill.core.nn import FeatureEmbedding, ModelConfig, masked_mean, mlp


@dataclass(frozen=True)
class StudentConfig(ModelConfig):
    dim: int = 16
    user_dim: int = 4
    hidden: tuple[int, ...] = (64, 32)
    dropout: float = 0.1
    oov_dropout: float = 0.05
    # A train-only tower that absorbs the logged position's effect on labels; not exported.
    position_tower: bool = True
    max_positions: int = 1_000
    # The user channel (where the view declares one; off: a control without it). In training this share of
    # examples reads the default user in place of their own, so the default learns what an unknown user is.
    user_channel: bool = True
    user_dropout: float = 0.1


class StudentModel(nn.Module):
    def __init__(self, schema: FeatureSchema, config: StudentConfig, view: str = "student") -> None:
        super().__init__()
        self.schema = schema
        self.config = config
        self.view = view
        d = config.dim
        self.embed = FeatureEmbedding(schema, view, d, config.user_dim, config.oov_dropout)
        declared = schema.view(view)
        self.user_rows = declared.user_buckets + FIRST_KNOWN_INDEX if declared.user_buckets else 0
        channel = declared.user_dim if self.user_rows and config.user_channel else 0
        self.channel_dim = channel
        if channel:
            # Rows start at 0 and only trained buckets move: an unseen user reads the default alone.
            self.user_table = nn.Embedding(self.user_rows, channel, padding_idx=MISSING_INDEX)
            nn.init.zeros_(self.user_table.weight)
            self.user_default = nn.Parameter(torch.zeros(channel))
            # The candidate as the user channel reads it: its own item table, so the term is a plain
            # user x item factorisation (what "this user keeps buying this product" needs).
            self.channel_items = nn.Embedding(schema.vocab_size("item_id"), channel, padding_idx=MISSING_INDEX)
            nn.init.normal_(self.channel_items.weight, std=0.1)
        features = 3 * d + self.embed.user_out + self.embed.num_actions + 1 + MATCH_FEATURES
        self.bottom = mlp([features, *config.hidden], config.dropout)
        self.serving_head = nn.Linear(config.hidden[-1], 1)
        self.teacher_head = nn.Linear(config.hidden[-1], 1)
        # Added to the serving logit in the exported graph only: maps a student trained on
        # negative-sampled data back to the full traffic (log of the negative keep rate).
        self.register_buffer("serving_logit_offset", torch.zeros(()))
        # Position 0 means "unknown" (e.g. historical logs); logged positions are stored as 1 + rank.
        self.position_bias = nn.Embedding(config.max_positions + 1, 1, padding_idx=0) if config.position_tower \
            else None
        if self.position_bias is not None:
            # No position effect until the logs show one (a random start would add noise to every label loss).
            nn.init.zeros_(self.position_bias.weight)

    def position_logit(self, positions: torch.Tensor) -> torch.Tensor:
        if self.position_bias is None:
            return torch.zeros(positions.shape, dtype=torch.float32)
        return self.position_bias(positions.clamp(0, self.config.max_positions)).squeeze(-1)

    def user_vector(self, x: dict[str, torch.Tensor]) -> torch.Tensor:
        """[B, channel]: the learned default plus the user's bucket (0 without an id or, in training, for the
        `user_dropout` share of examples)."""
        rows = x["user_hash"][:, 0].clamp(0, self.user_rows - 1)
        if self.training and self.config.user_dropout > 0:
            dropped = torch.rand(rows.shape, device=rows.device) < self.config.user_dropout
            rows = torch.where(dropped, torch.zeros_like(rows), rows)
        return self.user_default + self.user_table(rows)

    def heads(self, **x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(serving logits, teacher-head logits), each [B, C], from the encoder's tensors by name."""
        tokens, mask = self.embed.history(x)
        cand = self.embed.candidates(x)
        pooled = masked_mean(tokens, mask)
        context = torch.cat([pooled, self.embed.user(x), self.embed.action_distribution(x, mask),
                             x["hist_length"]], dim=-1).unsqueeze(1).expand(-1, cand.shape[1], -1)
        shared = self.bottom(torch.cat([cand, cand * pooled.unsqueeze(1), context, window_matches(x)], dim=-1))
        serving, teacher = self.serving_head(shared).squeeze(-1), self.teacher_head(shared).squeeze(-1)
        if self.channel_dim:  # the user x candidate term, shared by both heads (part of the shared bottom)
            term = (self.channel_items(x["cand_item"]) * self.user_vector(x).unsqueeze(1)).sum(-1)
            serving, teacher = serving + term, teacher + term
        return serving, teacher

    def forward(self, **x: torch.Tensor) -> torch.Tensor:
        """Serving probabilities [B, C]: the exported graph."""
        serving, _ = self.heads(**x)
        return torch.sigmoid(serving + self.serving_logit_offset)


MATCH_FEATURES = 3


def window_matches(x: dict[str, torch.Tensor]) -> torch.Tensor:
    """Candidate-aware reading of the window [B, C, 3]: log(1 + times the window holds the candidate), whether
    it does, and the recency (log1p hours) of its last occurrence (0 when none). Unknown items never match."""
    items, candidates = x["hist_item"], x["cand_item"]
    eq = (candidates.unsqueeze(-1) == items.unsqueeze(1)) & (items >= FIRST_KNOWN_INDEX).unsqueeze(1)
    counts = eq.float().sum(-1)
    found = (counts > 0).float()
    recency = torch.where(eq, x["hist_recency"].unsqueeze(1), torch.full_like(eq, 1e4, dtype=torch.float32))
    last = recency.amin(-1) * found
    return torch.stack([torch.log1p(counts), found, last], dim=-1)


BATCH_STUDENT = "student-batch.pt"
BATCH_CALIBRATION = "teacher-calibration.msgpack"


def save_student(state_dir: Path, model: StudentModel, calibration: Calibration | None) -> None:
    """The batch phase's student (weights and config, loaded with `weights_only=True`) and its teacher
    calibration (a typed struct), from which the streaming phase continues."""
    state_dir.mkdir(parents=True, exist_ok=True)
    saved = {"config": model.config.to_dict(), "model": model.state_dict(), "view": model.view}
    atomic_write_with(state_dir / BATCH_STUDENT, lambda handle: torch.save(saved, handle))
    calibration_path = state_dir / BATCH_CALIBRATION
    if calibration is None:
        calibration_path.unlink(missing_ok=True)
    else:
        atomic_write_bytes(calibration_path, calibration.to_bytes())


def load_student(state_dir: Path, schema: FeatureSchema) -> tuple[StudentModel | None, Calibration | None]:
    """The batch student and the teacher calibration it was trained with, if there are any."""
    path = state_dir / BATCH_STUDENT
    if not path.exists():
        return None, None
    saved = torch.load(path, map_location="cpu", weights_only=True)
    model = StudentModel(schema, StudentConfig.from_dict(saved["config"]), view=saved.get("view", "student"))
    model.load_state_dict(saved["model"])
    calibration_path = state_dir / BATCH_CALIBRATION
    calibration = Calibration.from_bytes(calibration_path.read_bytes(), str(calibration_path)) \
        if calibration_path.exists() else None
    return model, calibration
