"""The gate every exported student passes before it serves (ONNX parity, holdout quality against the
active version, ONNX Runtime latency), and promotion through the student server's operator API."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import torch

from distill_worker.export import PARITY_TOLERANCE, parity
from distill_worker.settings import GateConfig
from recdistill.core.artifact import read_state
from recdistill.core.contracts.onnx import serving_session
from recdistill.core.data.synthetic import synthetic_requests
from recdistill.core.features.encoder import Encoder
from recdistill.core.training import EncodedSplit, evaluate_split

logger = logging.getLogger(__name__)


@dataclass
class GateResult:
    accepted: bool
    reasons: list[str] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)


def onnx_metrics(model: bytes | Path, holdout: EncodedSplit) -> dict[str, float]:
    session = serving_session(model)

    def score(inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.from_numpy(session.run(None, {name: t.numpy() for name, t in inputs.items()})[0])

    return evaluate_split(score, holdout)


def standard_request(encoder: Encoder) -> dict[str, np.ndarray]:
    """100 candidates, a history as long as the student's view: the request the latency budget is for."""
    (body,) = synthetic_requests(encoder.schema, 1, history_len=encoder.history_len, candidates=100, seed=7)
    tensors, _ = encoder.encode_requests([encoder.schema.parse_request(orjson.dumps(body))])
    return tensors


def gate(onnx_model: bytes, model: torch.nn.Module, probe: dict[str, np.ndarray], holdout: EncodedSplit,
         registry: Path, config: GateConfig) -> GateResult:
    result = GateResult(accepted=True)
    difference = parity(onnx_model, model, probe)
    result.metrics["parity_max_abs_diff"] = difference
    if difference > PARITY_TOLERANCE:
        result.reasons.append(f"ONNX parity {difference:.2e} > {PARITY_TOLERANCE:.0e}")
    candidate = onnx_metrics(onnx_model, holdout)
    result.metrics["holdout"] = candidate
    active = read_state(registry).active
    if active:
        active_metrics = onnx_metrics(registry / active / "model.onnx", holdout)
        result.metrics["active_version"] = active
        result.metrics["active_holdout"] = active_metrics
        if candidate["auc"] < active_metrics["auc"] - config.auc_tolerance:
            result.reasons.append(f"holdout AUC {candidate['auc']:.4f} < active {active} "
                                  f"{active_metrics['auc']:.4f} - {config.auc_tolerance}")
    session, request = serving_session(onnx_model), standard_request(holdout.encoder)
    timings = []
    for _ in range(config.latency_runs):
        started = time.perf_counter()
        session.run(None, request)
        timings.append(time.perf_counter() - started)
    p99 = float(np.percentile(timings, 99) * 1e3)
    result.metrics["latency_p99_ms"] = p99
    if p99 > config.latency_budget_ms:
        result.reasons.append(f"ONNX Runtime p99 {p99:.2f} ms > budget {config.latency_budget_ms} ms")
    result.accepted = not result.reasons
    return result


def promote(server_url: str, token: str, version: str) -> None:
    """Stage then activate `version` on the student server; raises with the server's reason."""
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=server_url, headers=headers, timeout=120) as client:
        for action in ("stage", "activate"):
            response = client.post(f"/admin/versions/{version}/{action}")
            if response.status_code != 200:
                raise RuntimeError(f"{action} {version} refused ({response.status_code}): {response.text[:500]}")
    logger.info("promoted %s on %s", version, server_url)
