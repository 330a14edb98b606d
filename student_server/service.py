"""The ranking core shared by HTTP and gRPC: limits, encoding, micro-batched scoring, sampling."""

from __future__ import annotations

import random
import time
import uuid
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import msgspec
import numpy as np

from recdistill.core.contracts.records import FeedbackRecord, Policy, SampledRequest
from recdistill.core.errors import ValidationError
from recdistill.core.features.request import (
    ITEM_ID_MAX_LENGTH,
    REQUEST_ID_MAX_LENGTH,
    TS_MAX,
    ColumnarRequest,
    candidate_ids,
    check_limits,
)
from recdistill.core.features.schema import FeatureSchema
from student_server import metrics
from student_server.errors import BadHeaderError, NotReadyError
from student_server.sampling import TrafficSampler
from student_server.scenarios import Scenario, Scenarios
from student_server.scoring import MicroBatcher
from student_server.settings import StudentSettings

TRAFFIC_SOURCE_MAX_BYTES = 64


@dataclass
class RankResult:
    request_id: str  # the server's own, unique: the key of the sampled record and of the feedback to it
    model_version: str
    item_ids: list[str]
    scores: np.ndarray
    scenario: str
    # "model": ranked by the scores; "random": the exploration slice, served in a uniformly random order
    # (still with the model's scores), so that position is independent of the item there.
    policy: Policy = "model"
    shuffle_seed: int | None = None
    client_request_id: str | None = None  # the client's `request_id`, kept beside the server's, never a key

    @cached_property
    def order(self) -> np.ndarray:
        """Candidate indices, best first (ties keep request order); a random permutation when exploring."""
        if self.policy == "random":
            return np.random.default_rng(self.shuffle_seed).permutation(len(self.scores))
        return np.argsort(-self.scores, kind="stable")

    @property
    def ranking(self) -> list[str]:
        item_ids = self.item_ids
        return [item_ids[i] for i in self.order.tolist()]

    def to_json(self) -> dict[str, Any]:
        return {"request_id": self.request_id, "model_version": self.model_version,
                "scores": self.scores.tolist(), "ranking": self.ranking, "policy": self.policy,
                "scenario": self.scenario, "client_request_id": self.client_request_id}


class RankingService:
    def __init__(self, settings: StudentSettings, schema: FeatureSchema, scenarios: Scenarios,
                 sampler: TrafficSampler) -> None:
        self.settings = settings
        # The request structs of the registry's schema (every scenario's request carries the same raw
        # columns); a field it does not declare is a 422 naming it, unless the operator chose to ignore such fields.
        self.request_types = schema.request_types(settings.ignore_unknown_features)
        self.scenarios = scenarios
        self.sampler = sampler
        self.batcher = MicroBatcher(settings.max_batch_requests, settings.max_batch_wait_us)
        self._random = random.Random()
        self.source_header = settings.traffic_source_header.lower().encode("latin-1")
        self.reads_source = bool(sampler.source_rates)  # the traffic source is read for the sampling rules

    def traffic_source(self, value: bytes | str | None) -> str | None:
        """The caller's traffic source from its header (HTTP bytes, gRPC text), kept as sent: at most
        `TRAFFIC_SOURCE_MAX_BYTES` of UTF-8, else refused naming the header."""
        if value is None:
            return None
        raw = value.encode() if isinstance(value, str) else value
        name = self.settings.traffic_source_header
        if len(raw) > TRAFFIC_SOURCE_MAX_BYTES:
            raise BadHeaderError(name, f"at most {TRAFFIC_SOURCE_MAX_BYTES} bytes, got {len(raw)}")
        try:
            return raw.decode()
        except UnicodeDecodeError:
            raise BadHeaderError(name, "must be UTF-8 text") from None

    async def rank(self, request: Any, scenario: Scenario, source: str | None = None,
                   body: bytes | None = None) -> RankResult:
        """Score and rank for `scenario`; `source` is the caller's traffic source (a header), which only sampling
        reads; `body` the request's JSON as it came (HTTP), which a sampled record keeps."""
        check_limits(request, self.settings.max_candidates, self.settings.max_history)
        scorer = scenario.registry.scorer_for(str(request.user.user_id))
        if scorer is None:
            raise NotReadyError(f"scenario {scenario.name}: no model version is active; stage and activate one "
                                "through /admin")
        item_ids = candidate_ids(request)
        context = scenario.encoder.map_request(request, candidate_ids=item_ids)
        probabilities = await self.batcher.submit(context, scorer)
        metrics.CANDIDATES.observe(len(item_ids))
        # Every request its own id (two clients, or one client's retries, may send the same `request_id`).
        result = RankResult(uuid.uuid4().hex, scorer.version, item_ids, probabilities, scenario.name,
                            client_request_id=request.request_id)
        if self.settings.exploration_rate and self._random.random() < self.settings.exploration_rate:
            result.policy, result.shuffle_seed = "random", self._random.getrandbits(64)
            metrics.EXPLORED.inc()
        probability = self.sampler.probability(len(request.history), source)
        if self.sampler.should_sample(probability):
            self.sampler.offer(self._sample_record(request, body, result, context.request_ts, probability, source,
                                                   scenario))
        return result

    def _sample_record(self, request: Any, body: bytes | None, result: RankResult, request_ts: float,
                       probability: float, source: str | None, scenario: Scenario) -> SampledRequest:
        scores, positions = SampledRequest.pack(result.scores, result.order)
        return SampledRequest(
            request_id=result.request_id, ts=time.time(), request_ts=request_ts, model_version=result.model_version,
            sampling_probability=probability, request=body if body is not None else request.to_json()
            if isinstance(request, ColumnarRequest) else msgspec.json.encode(request),
            scores=scores, positions=positions, policy=result.policy,
            traffic_source=source, scenario=scenario.name, client_request_id=result.client_request_id)

    async def feedback(self, request_id: str, item_id: str, label: float, ts: float | None) -> None:
        """The same limits whichever protocol it came by (the HTTP model documents them too)."""
        for field, value, most in (("request_id", request_id, REQUEST_ID_MAX_LENGTH),
                                   ("item_id", item_id, ITEM_ID_MAX_LENGTH)):
            if not value:
                raise ValidationError(field, "must not be empty")
            if len(value) > most:
                raise ValidationError(field, f"at most {most} characters, got {len(value)}")
        if not 0.0 <= label <= 1.0:  # also refuses NaN
            raise ValidationError("label", "must be between 0 and 1")
        if ts is not None and not 0.0 <= ts <= TS_MAX:
            raise ValidationError("ts", f"must be unix seconds in [0, {TS_MAX:g}]")
        now = time.time()
        await self.sampler.write_durably(FeedbackRecord(request_id=request_id, item_id=item_id, label=float(label),
                                                        ts=now if ts is None else ts, received_ts=now))

    def close(self) -> None:
        self.batcher.close()
        self.sampler.close()
