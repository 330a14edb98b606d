"""The student: small enough for the serving budget (short history, small embeddings).

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
from recdistill.core.features.schema import FeatureSchema
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


class StudentModel(nn.Module):
    def __init__(self, schema: FeatureSchema, config: StudentConfig, view: str = "student") -> None:
        super().__init__()
        self.schema = schema
        self.config = config
        self.view = view
        d = config.dim
        self.embed = FeatureEmbedding(schema, view, d, config.user_dim, config.oov_dropout)
        features = 3 * d + self.embed.user_out + self.embed.num_actions + 1
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

    def heads(self, **x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(serving logits, teacher-head logits), each [B, C], from the encoder's tensors by name."""
        tokens, mask = self.embed.history(x)
        cand = self.embed.candidates(x)
        pooled = masked_mean(tokens, mask)
        context = torch.cat([pooled, self.embed.user(x), self.embed.action_distribution(x, mask),
                             x["hist_length"]], dim=-1).unsqueeze(1).expand(-1, cand.shape[1], -1)
        shared = self.bottom(torch.cat([cand, cand * pooled.unsqueeze(1), context], dim=-1))
        return self.serving_head(shared).squeeze(-1), self.teacher_head(shared).squeeze(-1)

    def forward(self, **x: torch.Tensor) -> torch.Tensor:
        """Serving probabilities [B, C]: the exported graph."""
        serving, _ = self.heads(**x)
        return torch.sigmoid(serving + self.serving_logit_offset)


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
