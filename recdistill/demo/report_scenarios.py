"""The demo report's scenarios: every scenario the schema declares, its students against the one teacher (the
protocol's figures: `summarize_task` on its own experiment), and what it served and streamed during the replay."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import msgspec
import numpy as np

from recdistill.core.contracts.demo import ScenarioFigures, ScenarioServing
from recdistill.core.contracts.worker import StreamReport
from recdistill.core.data.dataset import PreparedDataset
from recdistill.core.places import ScenarioPlace
from recdistill.demo.config import DemoConfig
from recdistill.demo.live import LiveResult, ScenarioServed


def scenario_figures(dataset: PreparedDataset, config: DemoConfig, results: dict[str, Any],
                     tasks: dict[str, dict[str, Any]], summarize: Callable[[Any, DemoConfig], dict[str, Any]]
                     ) -> list[ScenarioFigures]:
    """Every declared scenario: the first's figures are its task's; another's, those of its own students
    (`TaskResults.scenarios`) against the same teacher's scores, summarized the same way."""
    schema, rows = dataset.schema, []
    for spec in schema.scenarios:
        view = schema.view(spec.view)
        common = {"name": spec.name, "task": spec.task, "view": spec.view, "history_events": view.history_len,
                  "traffic": list(spec.traffic)}
        result = results.get(spec.task)
        first = ScenarioPlace.of(schema, spec.name).first
        experiment = None if result is None else result.experiment if first else result.scenarios.get(spec.name)
        if result is None or experiment is None:
            rows.append(ScenarioFigures(**common, evaluated=False, note=f"the demo ran no {spec.task} teacher "
                                        f"(its tasks: {', '.join(config.tasks)})"))
            continue
        summary = tasks[spec.task] if first else summarize(replace(
            result, experiment=experiment, stream_runs={}, live_versions=[], short_teacher_scores=None,
            short_teacher_test=None), config)
        hit_rate = experiment.phase.label_hit_rate
        rows.append(msgspec.convert(common | _live_figures(result.live, None if first else spec.name) | dict(
            evaluated=True, student_parameters=summary["student_parameters"],
            seeds=len(summary["student_distilled"]["seeds"]), teacher_auc=summary["teacher"]["auc"],
            baseline_auc=summary["student_baseline"]["auc"], distilled_auc=summary["student_distilled"]["auc"],
            label_hit_rate=round(hit_rate, 4) if math.isfinite(hit_rate) else None,
            **{key: summary[key] for key in (
                "gain_auc", "gain_auc_ci95", "teacher_gain_auc_ci95", "transferability", "transferability_ci95",
                "transferability_attributable", "transferability_attributable_ci95", "best_control")}),
            ScenarioFigures))
    return rows


def _live_figures(live: LiveResult | None, other: str | None) -> dict[str, Any]:
    """What a scenario served and streamed during the replay (`other`: a scenario beside the first)."""
    if live is None or (other is not None and other not in live.scenarios):
        return {}
    if other is None:
        served, stream = live.served, live.stream_state
        versions = [swap.version for swap in live.swaps if swap.phase == "stream"]
    else:
        served, stream, versions = live.scenarios[other].served, live.scenarios[other].stream_state, \
            live.scenarios[other].versions
    return {"served_live": len(served), "live_errors": sum(s.error is not None for s in served),
            "streamed": stream.examples_trained if isinstance(stream, StreamReport) else None,
            "versions_streamed": versions}


def scenario_serving(other: ScenarioServed) -> ScenarioServing:
    """A scenario beside the first during the replay: its requests, errors, latency, its trainer's counts and
    the versions it promoted."""
    latencies = np.array([s.latency_ms for s in other.served if s.error is None])
    return ScenarioServing(requests=len(other.served), errors=sum(s.error is not None for s in other.served),
                           p50_ms=round(float(np.percentile(latencies, 50)), 2) if latencies.size else None,
                           p99_ms=round(float(np.percentile(latencies, 99)), 2) if latencies.size else None,
                           versions_served=sorted({s.version for s in other.served if s.version}),
                           versions_promoted=other.versions, stream=other.stream_state)
