"""Training the sequence teacher: every position of a user's sequence in one pass, sampled softmax, early
stopping on the valid window's slates (before the gate's holdout), on the GPU where there is one.

A user's training-window events are read in windows of `train_len` (the most recent first); at each
position the state after the event, with the gap to the next one, must pick the next event's item out of
`negatives` items drawn uniformly for the batch. Validation scores the valid window's slates through the
serving path (`SequenceTeacher.forward` on the shared encoder's tensors), so what early stopping reads
is what Triton serves.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import psutil
import torch
import torch.nn.functional as F

from recdistill.core.data.dataset import PreparedDataset
from recdistill.core.errors import DataError
from recdistill.core.features.encoder import Encoder
from recdistill.core.features.schema import FIRST_KNOWN_INDEX
from recdistill.core.training import EncodedSplit, FitResult, evaluate_split
from teacher_service.sequence import SequenceConfig, SequenceTeacher

logger = logging.getLogger(__name__)


def resolve_device(requested: str) -> torch.device:
    """`auto`: CUDA when there is one, else the CPU (and it says so); `cuda` without CUDA: a clear error."""
    if requested not in ("auto", "cpu", "cuda"):
        raise DataError(f"device must be auto, cpu or cuda, not {requested!r}")
    available = torch.cuda.is_available()
    if requested == "cuda" and not available:
        raise DataError("--device cuda: no CUDA device is available here (torch.cuda.is_available() is False); "
                        "use --device cpu or auto")
    if requested == "auto" and not available:
        logger.info("--device auto: no CUDA device here, training on the CPU")
    return torch.device("cuda" if requested == "cuda" or (requested == "auto" and available) else "cpu")


def check_memory(size: str, model: SequenceTeacher, batch_size: int, device: torch.device) -> None:
    """Refuse, before any training, a size the device cannot hold: weights, gradients and Adam's two
    moments (16 bytes a parameter) and the activations of a batch (about 16 floats a token a layer)."""
    config = model.config
    parameters = sum(p.numel() for p in model.parameters())
    activations = batch_size * config.train_len * config.dim * max(1, config.layers) * 16 * 4
    need = parameters * 16 + activations
    free = torch.cuda.mem_get_info(device)[0] if device.type == "cuda" else psutil.virtual_memory().available
    if need > 0.9 * free:
        raise DataError(f"teacher size {size} needs about {need / 2**30:.1f} GiB to train ({parameters:,} parameters, "
                        f"batches of {batch_size} x {config.train_len} events) and {free / 2**30:.1f} GiB is free "
                        f"on {device.type}: choose a smaller size, batch or history")


@dataclass
class _Window:
    items: np.ndarray
    actions: np.ndarray
    values: np.ndarray
    gaps: np.ndarray  # hours since the event before (0 for a user's first)
    next_gaps: np.ndarray  # hours to the next event
    end_ts: float  # the time of its last event


def training_windows(dataset: PreparedDataset, encoder: Encoder, end_ts: float, length: int,
                     max_events: int | None = None) -> list[_Window]:
    """Every user's events before `end_ts` (the training window), in windows of `length` ending at the most
    recent; with `max_events`, only the most recent windows up to about that many events in all."""
    windows = []
    for timeline in dataset.mapped_timelines(encoder).values():
        n = int(np.searchsorted(timeline.timestamps, end_ts, side="left"))
        if n < 2:
            continue
        hours = timeline.timestamps[:n] / 3600.0
        gaps = np.diff(hours, prepend=hours[0])
        next_gaps = np.append(np.diff(hours), 0.0)
        for stop in range(n, 1, -length):
            start = max(0, stop - length)
            windows.append(_Window(timeline.items[start:stop], timeline.actions[start:stop],
                                   timeline.values[start:stop].astype(np.float32), gaps[start:stop],
                                   next_gaps[start:stop], float(timeline.timestamps[stop - 1])))
    if max_events is not None:  # the most recent windows, as the attention family keeps the most recent events
        windows.sort(key=lambda w: -w.end_ts)
        kept, total = [], 0
        for window in windows:
            if total >= max_events:
                break
            kept.append(window)
            total += len(window.items)
        windows = kept
    return windows


def window_batch(windows: list[_Window], device: torch.device) -> dict[str, torch.Tensor]:
    width = max(len(w.items) for w in windows)

    def pad(name: str, dtype: np.dtype) -> torch.Tensor:
        out = np.zeros((len(windows), width), dtype=dtype)
        for row, window in enumerate(windows):
            values = getattr(window, name)
            out[row, : len(values)] = values
        return torch.from_numpy(out).to(device)

    return {"items": pad("items", np.int64), "actions": pad("actions", np.int64), "values": pad("values", np.float32),
            "gaps": pad("gaps", np.float32), "next_gaps": pad("next_gaps", np.float32),
            "lengths": torch.tensor([len(w.items) for w in windows], device=device)}


def sequence_loss(model: SequenceTeacher, batch: dict[str, torch.Tensor], negatives: torch.Tensor) -> torch.Tensor:
    """Sampled softmax at every position: the next event's item against the shared negatives."""
    items, lengths = batch["items"], batch["lengths"]
    states = model.states(items, batch["actions"], batch["values"], batch["gaps"], lengths)
    queries = model.queries(states[:, :-1], batch["next_gaps"][:, :-1])
    targets = items[:, 1:]
    positions = torch.arange(targets.shape[1], device=items.device).unsqueeze(0)
    valid = (positions < (lengths - 1).unsqueeze(1)) & (targets >= FIRST_KNOWN_INDEX)  # unseen items teach nothing
    positive = model.score(queries, targets.unsqueeze(-1))  # [B, T, 1]
    negative = model.score_shared(queries, negatives)  # [B, T, K]
    negative = negative.masked_fill(negatives.view(1, 1, -1) == targets.unsqueeze(-1), float("-inf"))
    logits = torch.cat([positive, negative], dim=-1)[valid]
    return F.cross_entropy(logits.float(), torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device))


def fit_sequence(model: SequenceTeacher, windows: list[_Window], valid: EncodedSplit, *, epochs: int,
                 batch_size: int, lr: float, weight_decay: float, patience: int, seed: int, device: torch.device,
                 on_epoch: Callable[[dict[str, float]], None] | None = None) -> FitResult:
    """Adam on the sampled-softmax loss (bf16 autocast on CUDA), the best valid-AUC epoch's weights kept."""
    generator = np.random.default_rng(seed)
    model.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    vocabulary = model.embed.item.num_embeddings
    history: list[dict[str, float]] = []
    best, best_epoch, best_state = -1.0, 0, None
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast(
        "cpu", enabled=False)

    def score(inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        with autocast:
            return model(**{k: v.to(device) for k, v in inputs.items()}).float().cpu()

    for epoch in range(1, epochs + 1):
        started, tokens, losses = time.perf_counter(), 0, []
        model.train()
        order = generator.permutation(len(windows))
        for first in range(0, len(order), batch_size):
            chosen = [windows[i] for i in order[first:first + batch_size]]
            batch = window_batch(chosen, device)
            negatives = torch.from_numpy(generator.integers(FIRST_KNOWN_INDEX, vocabulary,
                                                            model.config.negatives)).to(device)
            with autocast:
                loss = sequence_loss(model, batch, negatives)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
            tokens += int(batch["lengths"].sum())
        seconds = time.perf_counter() - started
        model.eval()
        with torch.no_grad():
            metrics = evaluate_split(score, valid)
        row = {"epoch": epoch, "train_loss": float(np.mean(losses)), "valid_auc": metrics["auc"],
               "train_seconds": round(seconds, 2), "tokens_per_s": round(tokens / max(seconds, 1e-9), 1)}
        history.append(row)
        logger.info("sequence teacher epoch %d: loss %.4f, valid auc %.4f, %.0f tokens/s", epoch, row["train_loss"],
                    row["valid_auc"], row["tokens_per_s"])
        if on_epoch is not None:
            on_epoch(row)
        if metrics["auc"] > best:
            best, best_epoch = metrics["auc"], epoch
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        elif epoch - best_epoch >= patience:
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.to("cpu").eval()
    return FitResult(best_epoch=best_epoch, best_valid_auc=best, history=history)


def build_sequence_teacher(dataset: PreparedDataset, config: SequenceConfig) -> SequenceTeacher:
    return SequenceTeacher(dataset.schema, config)
