"""Training the sequence teacher: every position of a user's sequence in one pass, sampled softmax, early
stopping on the valid window's slates (before the gate's holdout), on the GPU where there is one.

A user's training-window events are read in windows of `train_len` (the most recent first); at each
position the state after the event, with the gap to the next one, must pick the next event's item out of
`negatives` items drawn uniformly for the batch and `own_negatives` drawn from the user's own history (on
repeat-purchase data the hard ones). The hard search's findings for every (position, candidate) pair (how
often the user's history up to that position holds the item, how long ago it last did) are counted over
the user's whole history before the position, not only the window, as serving counts them. Validation
scores the valid window's slates through the serving path (`SequenceTeacher.forward` on the shared
encoder's tensors), so what early stopping reads is what Triton serves.
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
    prefix: np.ndarray  # the user's items up to the window's end (views of the timeline, not copies)
    prefix_hours: np.ndarray

    @property
    def offset(self) -> int:
        return len(self.prefix) - len(self.items)

    def matches(self, candidates: np.ndarray, limit: int | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The hard search at every position t of the window for `candidates` [K] (what predicts event
        t + 1 reads): (matches in the history up to t [T, K], hours from the last match to event t + 1 [T, K],
        inf for none, hours from the first match to the last [T, K]), over the whole prefix, or its most recent
        `limit` events (then without the span: NaN)."""
        eq = (self.prefix[:, None] == candidates[None, :]) & (self.prefix >= FIRST_KNOWN_INDEX)[:, None]
        cumulative = np.cumsum(eq, axis=0, dtype=np.int32)
        rows = np.arange(self.offset, len(self.prefix))
        counts = cumulative[rows]
        last = np.maximum.accumulate(np.where(eq, np.arange(len(self.prefix))[:, None], -1), axis=0)[rows]
        if limit is not None:
            before = rows - limit
            counts = counts - np.where(before[:, None] >= 0, cumulative[before.clip(min=0)], 0)
            last = np.where(last > before[:, None], last, -1)
        target_hours = np.append(self.prefix_hours[rows[:-1] + 1], self.prefix_hours[-1])[:, None]
        since = np.where(last >= 0, target_hours - self.prefix_hours[last.clip(min=0)], np.inf)
        if limit is not None:
            span = np.full(counts.shape, np.nan, dtype=np.float32)
        else:
            first = np.minimum.accumulate(np.where(eq, np.arange(len(self.prefix))[:, None], len(self.prefix)),
                                          axis=0)[rows]
            span = np.where(last >= 0, self.prefix_hours[last.clip(min=0)] -
                            self.prefix_hours[first.clip(max=len(self.prefix) - 1)], 0.0)
        return counts, since.astype(np.float32), span.astype(np.float32)


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
                                   next_gaps[start:stop], float(timeline.timestamps[stop - 1]),
                                   timeline.items[:stop], hours[:stop]))
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


def window_batch(windows: list[_Window], device: torch.device, negatives: np.ndarray | None = None,
                 own_negatives: int = 0, limit: int | None = None, seed: int = 0) -> dict[str, torch.Tensor]:
    """Padded windows; with the batch's shared `negatives`, also `own_negatives` items a window drawn from its
    user's history and the hard search's findings for the targets, the shared and the own negatives."""
    width = max(len(w.items) for w in windows)

    def pad(name: str, dtype: np.dtype) -> torch.Tensor:
        out = np.zeros((len(windows), width), dtype=dtype)
        for row, window in enumerate(windows):
            values = getattr(window, name)
            out[row, : len(values)] = values
        return torch.from_numpy(out).to(device)

    batch = {"items": pad("items", np.int64), "actions": pad("actions", np.int64), "values": pad("values", np.float32),
             "gaps": pad("gaps", np.float32), "next_gaps": pad("next_gaps", np.float32),
             "lengths": torch.tensor([len(w.items) for w in windows], device=device)}
    if negatives is None:
        return batch
    generator = np.random.default_rng(seed)
    k, m = len(negatives), own_negatives
    own = np.zeros((len(windows), m), dtype=np.int64)
    counts = np.zeros((len(windows), width, 1 + k + m), dtype=np.int64)
    since = np.full((len(windows), width, 1 + k + m), np.inf, dtype=np.float32)
    span = np.zeros((len(windows), width, 1 + k + m), dtype=np.float32)
    for row, window in enumerate(windows):
        seen = window.prefix[window.prefix >= FIRST_KNOWN_INDEX]
        if m and len(seen):
            own[row] = generator.choice(seen, m)
        targets = np.append(window.items[1:], 0)
        unique, inverse = np.unique(np.concatenate([targets, negatives, own[row]]), return_inverse=True)
        found, hours, spans = window.matches(unique, limit)
        t = len(window.items)
        columns = np.concatenate([inverse[:t, None], np.broadcast_to(inverse[t:], (t, k + m))], axis=1)
        counts[row, :t] = np.take_along_axis(found, columns, axis=1)
        since[row, :t] = np.take_along_axis(hours, columns, axis=1)
        span[row, :t] = np.take_along_axis(spans, columns, axis=1)
    found = {"own_negatives": own, "match_counts": counts, "match_since": since, "match_span": span}
    return batch | {name: torch.from_numpy(array).to(device) for name, array in found.items()}


def sequence_loss(model: SequenceTeacher, batch: dict[str, torch.Tensor], negatives: torch.Tensor) -> torch.Tensor:
    """Sampled softmax at every position: the next event's item against the shared and the window's own
    negatives, each with what the hard search finds for it (`window_batch` with the same negatives)."""
    items, lengths = batch["items"], batch["lengths"]
    states = model.states(items, batch["actions"], batch["values"], batch["gaps"], lengths)
    queries = model.queries(states[:, :-1], batch["next_gaps"][:, :-1])
    targets = items[:, 1:]
    positions = torch.arange(targets.shape[1], device=items.device).unsqueeze(0)
    valid = (positions < (lengths - 1).unsqueeze(1)) & (targets >= FIRST_KNOWN_INDEX)  # unseen items teach nothing
    own = batch["own_negatives"]  # [B, M]
    positive = model.score(queries, targets.unsqueeze(-1))  # [B, T, 1]
    shared = model.score_shared(queries, negatives)  # [B, T, K]
    mine = model.score(queries, own.unsqueeze(1).expand(-1, queries.shape[1], -1))  # [B, T, M]
    logits = torch.cat([positive, shared, mine], dim=-1)
    logits = logits + model.score_matches(queries, batch["match_counts"][:, :-1], batch["match_since"][:, :-1],
                                          batch["match_span"][:, :-1])
    candidates = torch.cat([negatives.view(1, 1, -1).expand(own.shape[0], 1, -1), own.unsqueeze(1)], dim=-1)
    same = torch.cat([torch.zeros_like(targets, dtype=torch.bool).unsqueeze(-1),
                      candidates == targets.unsqueeze(-1)], dim=-1)  # a negative that is the target
    logits = logits.masked_fill(same, float("-inf"))[valid]
    return F.cross_entropy(logits.float(), torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device))



def train_step(model: SequenceTeacher, optimizer: torch.optim.Optimizer, batch: dict[str, torch.Tensor],
               negatives: torch.Tensor, autocast: torch.autocast) -> torch.Tensor:
    """One optimizer step on a batch of windows; returns the loss."""
    with autocast:
        loss = sequence_loss(model, batch, negatives)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss

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
            shared = generator.integers(FIRST_KNOWN_INDEX, vocabulary, model.config.negatives)
            batch = window_batch(chosen, device, shared, model.config.own_negatives, model.config.history_limit,
                                 seed=int(generator.integers(2**31)))
            loss = train_step(model, optimizer, batch, torch.from_numpy(shared).to(device), autocast)
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
