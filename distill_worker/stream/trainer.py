"""The stream's trainer: one incremental update on a chunk of joined requests, with teacher labels (from the
label store, else from Triton) for every candidate, and the request's dense candidates (teacher labels only:
unobserved columns after the served ones, which the serving head's loss never reads)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from prometheus_client import Gauge

from distill_worker.debias import inverse_propensity_weights
from distill_worker.label_log import Labels
from distill_worker.labels import LabelRequest, label_each
from distill_worker.settings import DistillConfig, StreamConfig
from distill_worker.student import StudentConfig, StudentModel
from distill_worker.teacher_client import TeacherClient
from distill_worker.trainer import distill_loss
from recdistill.core.contracts.records import SampledRequest
from recdistill.core.data.dataset import PreparedDataset
from recdistill.core.data.dense import DenseCandidates
from recdistill.core.features.encoder import Encoder
from recdistill.core.training import Batch, to_torch

TRAIN_LOSS = Gauge("recdistill_worker_train_loss", "Loss of the last incremental update")
TEACHER_LAG = Gauge("recdistill_worker_teacher_lag_seconds",
                    "Time between the end of the teacher's training window and the newest request labelled")


class StreamTrainer:
    """One incremental update on a chunk of joined requests, with teacher labels for every candidate. With
    `dense`, the teacher is asked about each request's dense candidates too (when this trainer asks it), and
    every labelled candidate the store holds beyond the served ones (whoever asked) trains the teacher head."""

    def __init__(self, dataset: PreparedDataset, model: StudentModel | None, distill: DistillConfig,
                 config: StreamConfig, teacher: TeacherClient | None = None, store: Labels | None = None,
                 soft_transform: Callable[[np.ndarray], np.ndarray] | None = None,
                 dense: DenseCandidates | None = None) -> None:
        """`model`: the student to go on training (None: a new one on the schema's student view)."""
        if distill.use_teacher and (teacher is None or store is None):
            raise ValueError("distillation needs a teacher client and a label store")
        if model is None:
            model = StudentModel(dataset.schema, StudentConfig())
        self.schema = dataset.schema
        self.model, self.distill, self.config = model, distill, config
        self.teacher, self.store = teacher, store
        self.dense, self.popular = dense, dataset.popular_items if dense is not None else []
        self.dense_rows = 0  # dense candidates trained on (through the teacher head)
        self.soft_transform = soft_transform  # the batch phase's teacher calibration, if any
        self.student_encoder = Encoder(dataset.schema, model.view)
        self.teacher_encoder = Encoder(dataset.schema, "teacher")
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=config.lr)

    def examples(self, records: list[SampledRequest], feedback: dict[str, dict[str, float]],
                 dense: list[list[str]] | None = None) -> Batch:
        """The records' batch; `dense`: each record's dense candidates, after its served ones (unobserved)."""
        extra = dense or [[] for _ in records]
        contexts = [self.student_encoder.map_request(r.request, now=r.request_ts,
                                                     candidate_ids=[str(c.item_id) for c in r.request.candidates]
                                                     + more) for r, more in zip(records, extra, strict=True)]
        tensors, mask = self.student_encoder.assemble(contexts)
        width = mask.shape[1]
        labels = np.zeros((len(records), width), dtype=np.float32)
        observed = np.zeros_like(labels)
        positions = np.zeros((len(records), width), dtype=np.int64)
        for row, record in enumerate(records):
            logged = record.position_array
            positions[row, : len(logged)] = logged + 1
            observed[row, : len(logged)] = logged < self.config.exposed_positions
            given = feedback.get(record.request_id, {})
            for column, item in enumerate(str(c.item_id) for c in record.request.candidates):
                if item in given:
                    labels[row, column] = given[item]
                    observed[row, column] = 1.0  # feedback is an observation, whatever the position
        if self.config.inverse_propensity:
            weights = inverse_propensity_weights(np.array([r.sampling_probability for r in records]))
        else:
            weights = np.ones(len(records), dtype=np.float32)
        extras = {"observed": observed, "position": positions, "weight": weights}
        return Batch(to_torch(tensors), torch.from_numpy(labels), torch.from_numpy(mask),
                     np.arange(len(records)), {k: torch.from_numpy(v) for k, v in extras.items()})

    async def label(self, records: list[SampledRequest]
                    ) -> tuple[list[np.ndarray], list[list[str]], dict[int, str]]:
        """Teacher soft labels (from the store, else from Triton) for every candidate and then every dense
        candidate the store holds, calibrated; each labelled record's dense candidates; and the records the
        teacher refused (index -> reason). A refused batch is retried one record at a time, so one bad record
        never costs the others their labels."""
        assert self.teacher is not None
        assert self.store is not None
        requests = [LabelRequest.of(r, self.teacher_encoder, self.dense, self.popular) for r in records]
        soft, refused = await label_each(self.store, requests, self.teacher)
        dense: list[list[str]] = []
        if self.dense is not None:
            version = self.teacher.settings.trained_version
            kept = [r for index, r in enumerate(requests) if index not in refused]
            for row, request in enumerate(kept):
                items, values = self.store.extra(request.example_id, request.candidates, version)
                dense.append(items)
                soft[row] = np.concatenate([soft[row], values])
        if self.teacher.settings.teacher_data_end_ts is not None:
            TEACHER_LAG.set(records[-1].request_ts - self.teacher.settings.teacher_data_end_ts)
        if self.soft_transform is not None and soft:  # one call for the whole batch
            lengths = np.cumsum([len(values) for values in soft])[:-1]
            soft = np.split(self.soft_transform(np.concatenate(soft)), lengths)
        return soft, dense, refused

    def update(self, batch: Batch) -> float:
        self.model.train()
        loss = distill_loss(self.model, batch, self.distill, full_traffic=True)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.model.eval()
        TRAIN_LOSS.set(loss.item())
        return loss.item()

    async def train(self, records: list[SampledRequest], feedback: dict[str, dict[str, float]]
                    ) -> dict[int, str]:
        """One update on the records; returns those the teacher refused (index -> reason), not trained."""
        refused: dict[int, str] = {}
        soft: list[np.ndarray] = []
        dense: list[list[str]] = []
        if self.distill.use_teacher:
            soft, dense, refused = await self.label(records)
            records = [r for index, r in enumerate(records) if index not in refused]
        if not records:
            return refused
        batch = self.examples(records, feedback, dense)
        self.dense_rows += sum(map(len, dense))
        if self.distill.use_teacher:
            padded = np.zeros(batch.labels.shape, dtype=np.float32)
            for row, values in enumerate(soft):
                padded[row, : len(values)] = values
            batch.extras["soft_label"] = torch.from_numpy(padded)
        self.update(batch)
        return refused
