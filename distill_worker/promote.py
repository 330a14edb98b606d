"""The gate every exported student passes before it serves (ONNX parity; holdout quality, non-inferior to
the active version and to a fixed anchor by a paired user-level test; ONNX Runtime latency), publishing
into the registry (`publish_and_promote`, which returns a `PublishResult`), and promotion through the
student server's operator API.

Why an anchor: compared with the active version alone, each promotion may lose up to the margin, and the
losses add up (a stream of versions each a little worse than the last). The anchor is the batch phase's
version, then the first candidate significantly better than the anchor (`recdistill.core.bootstrap`);
every candidate must be non-inferior to both."""

from __future__ import annotations

import logging
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import msgspec
import numpy as np
import orjson
import torch

from distill_worker.export import PARITY_TOLERANCE, export_onnx, parity
from distill_worker.settings import GateConfig, WorkerSettings
from distill_worker.student import StudentModel
from recdistill.core.artifact import (
    ensure_registry,
    publish_version,
    read_anchor,
    read_state,
    recorded_anchor,
    write_anchor,
)
from recdistill.core.bootstrap import non_inferiority
from recdistill.core.contracts.onnx import serving_session
from recdistill.core.contracts.registry import GateAnchor
from recdistill.core.contracts.worker import (
    DataWindow,
    GateMetrics,
    GateRole,
    GateVerdict,
    NonInferiority,
    PublishResult,
)
from recdistill.core.data.synthetic import synthetic_requests
from recdistill.core.errors import DataError
from recdistill.core.evaluation import evaluate
from recdistill.core.features.encoder import Encoder
from recdistill.core.training import EncodedSplit, predict

logger = logging.getLogger(__name__)


def onnx_scores(model: bytes | Path, holdout: EncodedSplit) -> tuple[np.ndarray, np.ndarray]:
    """(scores [events, candidates], mask) of an ONNX model on the holdout."""
    session = serving_session(model)

    def score(inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.from_numpy(session.run(None, {name: t.numpy() for name, t in inputs.items()})[0])

    return predict(score, holdout)


def onnx_metrics(model: bytes | Path, holdout: EncodedSplit) -> dict[str, float]:
    scores, mask = onnx_scores(model, holdout)
    return evaluate(holdout.task, holdout.labels, scores, mask, holdout.user_ids)


def quality_decision(candidate: np.ndarray, references: dict[GateRole, np.ndarray], holdout: EncodedSplit,
                     config: GateConfig) -> dict[GateRole, NonInferiority]:
    """The candidate against each reference ("active", "anchor") on the holdout: a paired non-inferiority
    test each (`non_inferiority`), with its interval and power."""
    mask = holdout.labels >= 0
    return {role: non_inferiority(candidate, scores, holdout.labels, mask, holdout.user_ids, config.auc_tolerance,
                                  config.bootstrap_samples, config.power) for role, scores in references.items()}


def standard_request(encoder: Encoder) -> dict[str, np.ndarray]:
    """100 candidates, a history as long as the student's view: the request the latency budget is for."""
    (body,) = synthetic_requests(encoder.schema, 1, history_len=encoder.history_len, candidates=100, seed=7)
    tensors, _ = encoder.encode_requests([encoder.schema.parse_request(orjson.dumps(body))])
    return tensors


def gate_anchor(registry: Path) -> GateAnchor | None:
    """The gate's anchor: `gate-anchor.json`, or when that is missing, the one the manifests record (written
    back); None only for a registry that never had a gated version (the first becomes the anchor)."""
    anchor = read_anchor(registry)
    if anchor is None and (anchor := recorded_anchor(registry)) is not None:
        write_anchor(registry, anchor)
        logger.warning("gate-anchor.json was missing in %s: rebuilt from the manifests (anchor %s)", registry,
                       anchor.version)
    return anchor


def gate(onnx_model: bytes, model: torch.nn.Module, probe: dict[str, np.ndarray], holdout: EncodedSplit,
         registry: Path, config: GateConfig) -> GateVerdict:
    reasons = []
    difference = parity(onnx_model, model, probe)
    if difference > PARITY_TOLERANCE:
        reasons.append(f"ONNX parity {difference:.2e} > {PARITY_TOLERANCE:.0e}")
    scores, mask = onnx_scores(onnx_model, holdout)
    anchor = gate_anchor(registry)
    if anchor is not None and not (registry / anchor.version / "model.onnx").is_file():
        reasons.append(f"the gate's anchor version {anchor.version} is not in the registry {registry}: "
                       "restore it, or write gate-anchor.json naming a version to hold candidates to")
    roles: dict[GateRole, str | None] = {"active": read_state(registry).active,
                                         "anchor": anchor.version if anchor else None}
    loaded: dict[str, np.ndarray] = {}
    references: dict[GateRole, np.ndarray] = {}
    for role, version in roles.items():
        if version and (registry / version / "model.onnx").is_file():
            if version not in loaded:
                loaded[version] = onnx_scores(registry / version / "model.onnx", holdout)[0]
            references[role] = loaded[version]
    try:
        decisions = {role: msgspec.structs.replace(decision, version=roles[role])
                     for role, decision in quality_decision(scores, references, holdout, config).items()}
    except DataError as exc:  # a holdout whose AUC is undefined judges no candidate: refused, with the reason
        decisions = {}
        reasons.append(str(exc))
    for role, decision in decisions.items():
        if not decision.non_inferior:
            reasons.append(f"holdout AUC vs the {role} version {decision.version}: {decision.difference:+.4f} "
                           f"(lower 95% bound {decision.ci90[0]:+.4f}) is not within the margin -{decision.margin}")
    p99 = onnx_p99_ms(onnx_model, holdout.encoder, config.latency_runs)
    if p99 > config.latency_budget_ms:
        reasons.append(f"ONNX Runtime p99 {p99:.2f} ms > budget {config.latency_budget_ms} ms")
    # A new anchor: the first version, or one significantly better than the anchor.
    reanchor = anchor is None or ("anchor" in decisions and decisions["anchor"].better)
    metrics = GateMetrics(parity_max_abs_diff=difference, quality=decisions, reanchor=reanchor, latency_p99_ms=p99,
                          holdout=evaluate(holdout.task, holdout.labels, scores, mask, holdout.user_ids))
    return GateVerdict(accepted=not reasons, reasons=reasons, metrics=metrics)


def onnx_p99_ms(onnx_model: bytes, encoder: Encoder, runs: int) -> float:
    """ONNX Runtime's p99 latency (ms) on the standard request (`standard_request`)."""
    session, request = serving_session(onnx_model), standard_request(encoder)
    timings = []
    for _ in range(runs):
        started = time.perf_counter()
        session.run(None, request)
        timings.append(time.perf_counter() - started)
    return float(np.percentile(timings, 99) * 1e3)


def promote(server_url: str, token: str, version: str, scenario: str | None = None) -> None:
    """Stage then activate `version` in `scenario` (default: the first) on the student server; raises with the
    server's reason."""
    headers = {"Authorization": f"Bearer {token}"}
    params = {"scenario": scenario} if scenario else None
    with httpx.Client(base_url=server_url, headers=headers, params=params, timeout=120) as client:
        for action in ("stage", "activate"):
            response = client.post(f"/admin/versions/{version}/{action}")
            if response.status_code != 200:
                raise RuntimeError(f"{action} {version} refused ({response.status_code}): {response.text[:500]}")
    logger.info("promoted %s on %s", version, server_url)


def publish_and_promote(settings: WorkerSettings, model: StudentModel, holdout: EncodedSplit, window: DataWindow,
                        distill: dict[str, Any], anchor: bool = False) -> PublishResult:
    """Export, gate, publish (its manifest says what it was trained on: `window`, with the `distill` settings)
    and, with a server URL, promote. The version becomes the gate's anchor when `anchor` (the batch phase's),
    when there is none yet, or when it is significantly better than the anchor."""
    schema = holdout.encoder.schema
    scenario, registry = settings.target(schema).name, settings.target_registry(schema)
    probe, _ = holdout.encoder.assemble(holdout.contexts[:64])
    onnx_model = export_onnx(model, probe)
    verdict = gate(onnx_model, model, probe, holdout, registry, settings.gate)
    if not verdict.accepted:
        logger.warning("candidate refused, the active version keeps serving: %s", "; ".join(verdict.reasons))
        return PublishResult(version=None, gate=verdict)
    version = f"{settings.version_prefix}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    anchored = anchor or verdict.metrics.reanchor
    # In the manifest: a lost gate-anchor.json is rebuilt from it.
    verdict = msgspec.structs.replace(verdict, metrics=msgspec.structs.replace(verdict.metrics, anchored=anchored))
    ensure_registry(settings.registry, schema)
    publish_version(registry, version, onnx_model, schema.hash, teacher_version=settings.teacher.trained_version,
                    scenario=scenario, data_window=window, metrics=verdict.metrics, config=model.config.to_dict(),
                    distill=distill)
    promoted = bool(settings.server_url and settings.admin_token)
    if promoted:
        promote(settings.server_url, settings.admin_token, version, scenario)  # type: ignore[arg-type]
    if anchored:
        previous = read_anchor(registry)
        reason = "batch version" if anchor else "first version" if previous is None else \
            f"significantly better than {previous.version}"
        write_anchor(registry, GateAnchor(version=version, holdout_auc=verdict.metrics.holdout_auc,
                                                   reason=reason, anchored_unix=time.time()))
        logger.info("gate anchor: %s (%s)", version, reason)
    return PublishResult(version=version, gate=verdict, promoted=promoted, anchored=anchored)
