"""Training plumbing shared by the teacher job and the student trainer: encoded splits, batches,
a fit loop with early stopping on validation AUC, and batched prediction."""

from __future__ import annotations

import copy
import itertools
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from torch.nn.parallel import DistributedDataParallel

from recdistill.core import distributed
from recdistill.core.contracts.teacher import ScoreStack
from recdistill.core.data.dataset import PreparedDataset, Task
from recdistill.core.data.dense import DenseCandidates
from recdistill.core.evaluation import evaluate
from recdistill.core.features.encoder import Encoder, MappedContext
from recdistill.core.logs import STDERR

logger = logging.getLogger(__name__)
DENSE_HISTORY_LEN = 64


def to_torch(tensors: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    return {name: torch.from_numpy(array) for name, array in tensors.items()}


@dataclass
class Batch:
    inputs: dict[str, torch.Tensor]
    labels: torch.Tensor  # [B, C]
    mask: torch.Tensor  # [B, C] bool
    rows: np.ndarray  # positions in the split
    extras: dict[str, torch.Tensor] = field(default_factory=dict)  # row-aligned extras, e.g. soft labels


@dataclass
class EncodedSplit:
    """The mapped contexts of one split, ready to be assembled into batches."""

    task: Task
    event_ids: np.ndarray
    contexts: list[MappedContext]
    labels: np.ndarray  # [N, C]
    user_ids: np.ndarray  # [N]
    encoder: Encoder
    # Row-aligned arrays carried into every batch ([N, C] ones are cut to the batch's candidates):
    # teacher soft labels, sample weights, logged positions.
    extras: dict[str, np.ndarray] = field(default_factory=dict)
    # Short views (the student's) are assembled once for the whole split; batches are then slices.
    _dense: tuple[dict[str, np.ndarray], np.ndarray] | None = field(default=None, repr=False)

    @classmethod
    def build(cls, dataset: PreparedDataset, encoder: Encoder, split: str, task: Task,
              negatives: int | None = None, limit: int | None = None, exclude_last: int = 0,
              per_user: int | None = None, dense: DenseCandidates | None = None) -> EncodedSplit:
        """The split's events (`task`'s), less its `exclude_last` most recent, then each user's `per_user` most
        recent, then the `limit` most recent; `dense`: candidates with a teacher label only, after the rest."""
        event_ids = dataset.split(split, task)
        if exclude_last:
            event_ids = event_ids[:-exclude_last]
        if per_user is not None:
            event_ids = dataset.recent_per_user(event_ids, per_user)
        if limit is not None and limit < event_ids.size:
            event_ids = event_ids[-limit:]  # the most recent events of the split
        return cls(
            task=task,
            event_ids=event_ids,
            contexts=dataset.contexts(encoder, event_ids, task, negatives, dense),
            labels=dataset.labels(event_ids, task, negatives, dense),
            user_ids=dataset.events["user_id"].to_numpy()[event_ids],
            encoder=encoder,
        )

    def __len__(self) -> int:
        return len(self.contexts)

    def with_extras(self, **extras: np.ndarray) -> EncodedSplit:
        """The same split (sharing its contexts and assembled tensors) with other extras."""
        self._assemble_all()  # before the copy, so every copy shares one assembly
        return replace(self, extras=extras)

    def _assemble_all(self) -> None:
        if self._dense is None and self.encoder.history_len <= DENSE_HISTORY_LEN:
            self._dense = self.encoder.assemble(self.contexts)

    def _assemble(self, rows: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
        self._assemble_all()
        if self._dense is None:
            return self.encoder.assemble([self.contexts[i] for i in rows])
        tensors, mask = self._dense
        return {name: array[rows] for name, array in tensors.items()}, mask[rows]

    def batch(self, rows: np.ndarray) -> Batch:
        tensors, mask = self._assemble(rows)
        width = mask.shape[1]
        labels = self.labels[rows][:, :width]
        extras = {name: torch.from_numpy(np.ascontiguousarray(a[rows][:, :width] if a.ndim == 2 else a[rows]))
                  for name, a in self.extras.items()}
        return Batch(to_torch(tensors), torch.from_numpy(labels), torch.from_numpy(mask), rows, extras)

    def batches(self, batch_size: int, shuffle: bool = False, seed: int = 0) -> Iterator[Batch]:
        """Batches of similar history length (padding is what long histories cost), in a seeded order.

        Shuffled: a random permutation is cut into windows of 32 batches, each window is sorted by
        history length and cut into batches, and the batches are shuffled. Not shuffled: sorted by length.
        """
        lengths = np.fromiter((len(c.hist_item) for c in self.contexts), dtype=np.int64, count=len(self))
        if not shuffle:
            order = np.argsort(lengths, kind="stable")
            for start in range(0, len(order), batch_size):
                yield self.batch(order[start:start + batch_size])
            return
        rng = np.random.default_rng(seed)
        permutation = rng.permutation(len(self))
        window = 32 * batch_size
        chunks = []
        for start in range(0, len(permutation), window):
            part = permutation[start:start + window]
            part = part[np.argsort(lengths[part], kind="stable")]
            chunks += [part[i:i + batch_size] for i in range(0, len(part), batch_size)]
        for index in rng.permutation(len(chunks)):
            yield self.batch(chunks[index])


ScoreFn = Callable[[dict[str, torch.Tensor]], torch.Tensor]


@torch.no_grad()
def predict(score: ScoreFn, split: EncodedSplit, batch_size: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities [N, C] of `score` (inputs -> probabilities) and the candidate mask."""
    width = split.labels.shape[1]
    scores = np.zeros((len(split), width), dtype=np.float32)
    mask = np.zeros((len(split), width), dtype=bool)
    for batch in split.batches(batch_size):
        out = score(batch.inputs).numpy()
        scores[batch.rows, : out.shape[1]] = out
        mask[batch.rows, : out.shape[1]] = batch.mask.numpy()
    return scores, mask


def evaluate_split(score: ScoreFn, split: EncodedSplit, batch_size: int = 512) -> dict[str, float]:
    scores, mask = predict(score, split, batch_size)
    return evaluate(split.task, split.labels, scores, mask, split.user_ids)


@dataclass
class FitResult:
    best_epoch: int
    best_valid_auc: float
    history: list[dict[str, float]]
    stack: ScoreStack | None = None  # a sequence teacher's score stack, fitted on valid after training
    # What the fitted model serves on valid (`predict`'s probabilities and mask), when the fit already scored it.
    valid_predictions: tuple[np.ndarray, np.ndarray] | None = None


class _Objective(torch.nn.Module):
    """The loss as a module's forward, so that DistributedDataParallel sees (and synchronises) every
    gradient whatever parts of the model the loss calls."""

    def __init__(self, model: torch.nn.Module, loss_fn: Callable[[torch.nn.Module, Batch], torch.Tensor]) -> None:
        super().__init__()
        self.model = model
        self.loss_fn = loss_fn

    def forward(self, batch: Batch) -> torch.Tensor:
        return self.loss_fn(self.model, batch)


def fit(
    model: torch.nn.Module,
    train: EncodedSplit,
    valid: EncodedSplit,
    loss_fn: Callable[[torch.nn.Module, Batch], torch.Tensor],
    score: ScoreFn,
    epochs: int,
    batch_size: int,
    lr: float,
    weight_decay: float = 0.0,
    patience: int = 2,
    seed: int = 0,
    label: str = "train",
) -> FitResult:
    """Adam, one pass per epoch in a seeded order, keep the weights of the best validation AUC.

    Under torchrun (a process group is initialised) the model trains data-parallel with DDP: each of the
    W ranks takes every W-th slice of batch_size / W examples of the same seeded order, so one optimizer
    step still sees `batch_size` examples and the schedule matches one process. Every rank scores the
    whole valid window, so all of them stop at the same epoch and keep the same weights."""
    ranks = distributed.current()
    world, rank = (ranks.world, ranks.rank) if ranks else (1, 0)
    objective: torch.nn.Module = _Objective(model, loss_fn)
    if ranks:
        # Parts of the model a variant does not train (the auxiliary head of a baseline) get no gradient.
        objective = DistributedDataParallel(objective, find_unused_parameters=True)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    best_auc, best_epoch, best_state = -1.0, -1, copy.deepcopy(model.state_dict())
    history: list[dict[str, float]] = []
    shard = max(1, batch_size // world)
    steps = (len(train) + shard - 1) // shard // world  # equal on every rank: DDP steps in lockstep
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("{task.fields[status]}"))
    with Progress(*columns, transient=True, console=STDERR, disable=rank != 0) as progress:
        for epoch in range(epochs):
            model.train()
            bar = progress.add_task(f"{label} epoch {epoch + 1}/{epochs}", total=steps, status="")
            order_seed = seed * 1_000 + epoch  # paired runs (same seed) see the same batch order
            total, count, examples = 0.0, 0, 0
            epoch_started = time.perf_counter()
            batches = train.batches(shard, shuffle=True, seed=order_seed)
            for batch in itertools.islice(batches, rank, steps * world, world):
                loss = objective(batch)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total, count, examples = total + loss.item(), count + 1, examples + len(batch.rows)
                progress.update(bar, advance=1, status=f"loss {total / count:.4f}")
            progress.remove_task(bar)
            train_seconds = time.perf_counter() - epoch_started
            model.eval()
            metrics = evaluate_split(score, valid)
            history.append({"epoch": epoch + 1, "train_loss": total / max(count, 1), "train_seconds": train_seconds,
                            "examples": examples * world, **metrics})
            if rank == 0:
                logger.info("%s epoch %d: train loss %.4f, valid auc %.4f", label, epoch + 1,
                            total / max(count, 1), metrics["auc"])
            if metrics["auc"] > best_auc:
                best_auc, best_epoch, best_state = metrics["auc"], epoch + 1, copy.deepcopy(model.state_dict())
            elif epoch + 1 - best_epoch >= patience:
                break
    model.load_state_dict(best_state)
    model.eval()
    return FitResult(best_epoch=best_epoch, best_valid_auc=best_auc, history=history)
