"""Offline reruns of the streaming phase over the sample log the live stage recorded: the stream
ablations (inverse-propensity weights, position tower) against the same batch student and traffic."""

from __future__ import annotations

import copy
import shutil
import uuid
from dataclasses import replace
from pathlib import Path

import torch

from distill_worker import Calibration, StreamHooks, StudentModel, WorkerSettings, stream_main
from recdistill.core.samplelog import LogLocation

STREAM_VARIANTS: dict[str, str] = {
    "batch_only": "batch phase only (no streaming)",
    "stream": "batch + stream (replayed through again offline, as the ablations are)",
    "stream_no_ipw": "ablation: streaming without inverse sampling-probability weights",
    "stream_no_position_tower": "ablation: streaming without the train-only position tower",
}


async def rerun_stream(variant: str, settings: WorkerSettings, samples: str, work_dir: Path,
                       batch_model: StudentModel, calibration: Calibration | None, seed: int) -> StudentModel:
    """The worker's stream phase over the recorded sample log (a copy of a file log; a consumer group of its
    own on a redis log), from a copy of `batch_model`, reading the live stage's teacher labels from the
    labeller's label log (`settings.label_log`; no teacher call); nothing is published."""
    if variant == "batch_only":
        return batch_model
    torch.manual_seed(seed)
    if work_dir.exists():
        shutil.rmtree(work_dir)
    location = LogLocation.parse(samples)
    if location.kind == "file":
        shutil.copytree(location.directory, work_dir / "samples")  # the worker commits offsets into the log
        rerun_log = str(work_dir / "samples")
    else:  # the whole stream again, through a group of its own (it reads from the first entry)
        separator = "&" if "?" in samples else "?"
        rerun_log = f"{samples}{separator}group=rerun-{variant}-{seed}-{uuid.uuid4().hex[:8]}"
    (work_dir / "state").mkdir(parents=True)
    model = copy.deepcopy(batch_model)
    if variant == "stream_no_position_tower":
        model = StudentModel(batch_model.schema, replace(batch_model.config, position_tower=False))
        model.load_state_dict(batch_model.state_dict(), strict=False)
    # All of the log in one read, every join window closed: each request is trained with all its feedback.
    rerun = settings.model_copy(update={
        "sample_log": rerun_log, "state_dir": work_dir / "state",
        "stream": replace(settings.stream, max_records=1 << 30, inverse_propensity=variant != "stream_no_ipw"),
        "distill": replace(settings.distill, seed=seed)})
    _, model = await stream_main(rerun, hooks=StreamHooks(until=lambda: True, clock=lambda: float("inf")),
                                 initial_model=model, calibration=calibration, publish=False)
    shutil.rmtree(work_dir, ignore_errors=True)
    return model
