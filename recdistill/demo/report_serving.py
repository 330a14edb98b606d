"""The demo report's serving section (`serving` in report.json): what the live stage served, and how."""

from __future__ import annotations

from typing import Any

import msgspec
import numpy as np

from recdistill.core.contracts.demo import LabellerFigures, OnlineVersion, ProtocolLatency, ServingFigures
from recdistill.core.contracts.labels import LabellerReport
from recdistill.demo.live import LiveResult
from recdistill.demo.online import online_ab
from recdistill.demo.report_md import MAX_ERROR_SHARE
from recdistill.demo.report_scenarios import scenario_serving

ONLINE_NOTE = ("per served version over the stretch of the replay it served: different stretches of time, "
               "not an A/B; the A/B test is `online_ab`")


def _narrower(ab: dict[str, Any] | None, counterfactual: dict[str, Any] | None) -> float | None:
    if not ab or not counterfactual or "treatment_minus_control" not in ab:
        return None
    live, paired = ab["treatment_minus_control"]["click"], counterfactual["treatment_minus_control"]
    width = paired["high"] - paired["low"]
    return round((live["high"] - live["low"]) / width, 1) if width > 0 else None


def serving_summary(live: LiveResult, exposed_positions: int, samples: int,
                    counterfactual: dict[str, Any] | None = None) -> ServingFigures:
    """The live stage in report.json: latency by protocol, errors, swaps, what each served version did, the
    online A/B and its paired counterfactual, the stream's counters, the other scenarios and the labeller."""
    latencies = np.array([s.latency_ms for s in live.served if s.error is None])
    per_protocol = {}
    for protocol in ("http", "grpc"):
        values = np.array([s.latency_ms for s in live.served if s.protocol == protocol and s.error is None])
        if values.size:
            per_protocol[protocol] = ProtocolLatency(requests=int(values.size),
                                                     p50_ms=round(float(np.percentile(values, 50)), 2),
                                                     p99_ms=round(float(np.percentile(values, 99)), 2))
    errors = [s.error for s in live.served if s.error is not None]
    first_error = errors[0] if errors else None
    online = {}  # what each served version did for the replayed users
    for version in sorted({s.version for s in live.served if s.version}):
        mine = [s for s in live.served if s.version == version]
        online[version] = OnlineVersion(
            requests=len(mine), click_rate=round(float(np.mean([s.clicked for s in mine])), 4),
            real_item_in_top10=round(float(np.mean([s.real_item_rank is not None and s.real_item_rank < 10
                                                    for s in mine])), 4))
    ab = online_ab(live, exposed_positions, samples)
    return ServingFigures(
        requests=len(live.served), errors=len(errors), error_kinds=sorted(set(errors)),
        # More than MAX_ERROR_SHARE of the replay failing makes the run a failure: `recdistill demo` exits 1.
        failed=len(errors) + sum(s.error is not None for o in live.scenarios.values() for s in o.served)
        > MAX_ERROR_SHARE * max(1, len(live.served) + sum(len(o.served) for o in live.scenarios.values())),
        first_error=first_error, first_error_count=errors.count(first_error) if errors else 0,
        p50_ms=round(float(np.percentile(latencies, 50)), 2) if latencies.size else None,
        p99_ms=round(float(np.percentile(latencies, 99)), 2) if latencies.size else None,
        per_protocol=per_protocol, duration_s=live.duration_s,
        swaps=len(live.swaps) - 1,  # the first entry is the baseline serving from the start
        refused_by_gate=live.refused, clicks=sum(s.clicked for s in live.served),
        online_by_version=online, online_by_version_note=ONLINE_NOTE, online_ab=ab,
        online_counterfactual=counterfactual, counterfactual_narrower_by=_narrower(ab, counterfactual),
        feedback_errors=live.feedback_errors, stream=live.stream_state,
        scenarios={name: scenario_serving(other) for name, other in live.scenarios.items()},
        labeller=_labeller(live.labeller) if live.labeller else None)


def _labeller(report: LabellerReport) -> LabellerFigures:
    """The labeller's report, with its teacher requests and candidates a sampled request."""
    sampled = report.labelled + report.already_labelled
    return LabellerFigures(
        **msgspec.structs.asdict(report),
        teacher_requests_a_sampled_request=round(report.teacher_requests / sampled, 4) if sampled else None,
        teacher_candidates_a_sampled_request=round(report.teacher_candidates / sampled, 2) if sampled else None)
