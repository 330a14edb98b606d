"""The channel section: what the user channel costs the student at serving (ONNX size, ONNX Runtime p50/p99 on
one thread at 100 candidates, with and without it, side by side in one run) and what dense black-box labels cost
the teacher (candidates scored per labelled example, and the teacher's CPU per example, with and without them).

On the Instacart sample (with the user channel declared on its student view: 16,384 x 32), prepared into a
temporary directory when not given; the students are untrained (latency and size do not depend on the weights)."""

from __future__ import annotations

import dataclasses
import tempfile
import time
from pathlib import Path

import msgspec
import numpy as np
import torch

from benchmarks.results import Results, Row, percentiles_ms
from distill_worker import StudentConfig, StudentModel, export_onnx
from recdistill.core.contracts.onnx import session_options
from recdistill.core.data.dataset import PreparedDataset
from recdistill.core.data.dense import DenseCandidates
from recdistill.core.data.prepare import prepare_source
from recdistill.core.data.sources import shipped_schema
from recdistill.core.features.encoder import Encoder
from recdistill.core.features.schema import ModelView
from teacher_service import SEQUENCE_SIZES, SequenceTeacher

SECTION = "Channel: the user channel at serving, dense labels at the teacher"
COMMAND = "make bench (benchmarks/channel_bench.py)"
CANDIDATES = 100


def _onnx_latency(onnx_model: bytes, tensors: dict[str, np.ndarray], runs: int) -> tuple[float, float]:
    import onnxruntime as ort

    session = ort.InferenceSession(onnx_model, session_options(1), providers=["CPUExecutionProvider"])
    read = {i.name for i in session.get_inputs()}  # an input the graph does not read may be left out
    tensors = {name: tensor for name, tensor in tensors.items() if name in read}
    for _ in range(50):
        session.run(None, tensors)
    seconds = []
    for _ in range(runs):
        start = time.perf_counter()
        session.run(None, tensors)
        seconds.append(time.perf_counter() - start)
    return percentiles_ms(seconds)


def _request(dataset: PreparedDataset, encoder: Encoder) -> dict[str, np.ndarray]:
    """One request of the test window with its slate padded to 100 candidates from the catalogue."""
    event = int(dataset.split("test", "slate")[0])
    context = dataset.contexts(encoder, [event], "slate")[0]
    extra = dataset.popular_items[: CANDIDATES - len(context.cand_item)]
    items = [*dataset.candidates(event, "slate"), *extra][:CANDIDATES]
    context.cand_item, context.cand_cat, context.cand_multi, context.cand_num = encoder.map_candidates(items)
    return encoder.assemble([context])[0]


def run(results: Results, quick: bool, data: Path | None = None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        if data is None:
            data = Path(tmp) / "instacart"
            prepare_source("instacart", shipped_schema("instacart"), data)
        dataset = PreparedDataset(data)
        student = dataset.schema.view("student")
        if not student.user_buckets:  # the shipped Instacart schema leaves the channel off: measure it declared
            dataset.schema = dataclasses.replace(dataset.schema, _hash=None, views=dataset.schema.views | {
                "student": ModelView(student.history_len, student.features, 16_384, 32)})
        runs = 300 if quick else 3_000
        torch.manual_seed(0)
        measured: dict[str, tuple[int, float, float]] = {}
        for name, config in (("with", StudentConfig()), ("without", StudentConfig(user_channel=False))):
            model = StudentModel(dataset.schema, config).eval()
            tensors = _request(dataset, Encoder(dataset.schema, "student"))
            onnx_model = export_onnx(model, tensors)
            measured[name] = (len(onnx_model), *_onnx_latency(onnx_model, tensors, runs))
        (size_on, p50_on, p99_on), (size_off, p50_off, p99_off) = measured["with"], measured["without"]
        results.add(Row(SECTION, "student p99 at 100 candidates, ONNX Runtime, 1 thread, with the user channel",
                        p99_on, "ms", "the same without it", p99_off, ratio=p99_on / p99_off,
                        note=f"p50 {p50_on:.3f} ms with, {p50_off:.3f} ms without; goal: at most 1.2x",
                        command=COMMAND))
        results.add(Row(SECTION, "student ONNX size with the user channel", size_on / 2**20, "MiB",
                        "the same without it", size_off / 2**20, ratio=size_on / size_off, command=COMMAND))
        _teacher_rows(results, dataset, quick)
        _labeller_rows(results, dataset, Path(tmp), quick)


def _teacher_rows(results: Results, dataset: PreparedDataset, quick: bool) -> None:
    """Teacher candidates per labelled example and the teacher's CPU per example, with the default dense labels
    (30 own earlier items + 10 popular) and without, on the same training events, one thread."""
    encoder = Encoder(dataset.schema, "teacher")
    model = SequenceTeacher(dataset.schema, SEQUENCE_SIZES["seq-xs"]).eval()
    events = dataset.split("train", "slate")[-(64 if quick else 512):]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    figures = {}
    for name, dense in (("with", DenseCandidates()), ("without", None)):
        contexts = dataset.contexts(encoder, events, "slate", 8, dense)
        candidates = float(np.mean([len(c.cand_item) for c in contexts]))
        started = time.process_time()
        with torch.inference_mode():
            for start in range(0, len(contexts), 64):
                tensors, _ = encoder.assemble(contexts[start:start + 64])
                model(**{k: torch.from_numpy(v) for k, v in tensors.items()})
        figures[name] = (candidates, (time.process_time() - started) / len(contexts) * 1e3)
    torch.set_num_threads(threads)
    (cand_on, cpu_on), (cand_off, cpu_off) = figures["with"], figures["without"]
    results.add(Row(SECTION, "teacher candidates per labelled example, dense labels on", cand_on, "candidates",
                    "dense labels off (the item and 8 negatives)", cand_off, ratio=cand_on / cand_off,
                    note="30 of the user's own earlier items + 10 popular ones by default", command=COMMAND))
    results.add(Row(SECTION, "teacher CPU per labelled example, dense labels on (seq-xs, 1 thread)", cpu_on, "ms",
                    "dense labels off", cpu_off, ratio=cpu_on / cpu_off, command=COMMAND))


def _labeller_rows(results: Results, dataset: PreparedDataset, tmp: Path, quick: bool) -> None:
    """The labeller's throughput (sampled requests labelled a second, end to end: sample log, Triton, label log)
    with the default dense candidates and without, over the same sampled requests, one after the other against
    one Triton serving an (untrained) seq-xs teacher."""
    import asyncio

    from distill_worker import Labeller, SharedLabelStore, TeacherClient, TeacherClientSettings
    from recdistill.core.contracts.records import SampledRequest, encode_record
    from recdistill.core.contracts.teacher import TeacherDataWindow, TeacherManifest
    from recdistill.core.samplelog import LogLocation, SampleLog, open_source
    from teacher_service import save_checkpoint, teacher_process

    config = SEQUENCE_SIZES["seq-xs"]
    model = SequenceTeacher(dataset.schema, config).eval()
    save_checkpoint(tmp / "teacher", model, dataset.schema, TeacherManifest(
        teacher_version="bench-seq-xs", task="slate", size="seq-xs", family="sequence",
        config=dataclasses.asdict(config), parameters=sum(p.numel() for p in model.parameters()),
        schema_hash=dataset.schema.hash, dataset=dataset.manifest.dataset,
        data_window=TeacherDataWindow(train_start_ts=0, train_end_ts=0, train_events=0), train={}, best_epoch=0,
        history=[], valid={}, test={}, seconds=0.0))
    events = dataset.split("test", "slate")[: 128 if quick else 512]
    log = SampleLog(tmp / "samples" / "bench-0")
    records = []
    for event in events:
        body = dataset.to_request(int(event), "slate", negatives=20)
        count = len(body["candidates"])
        scores, positions = SampledRequest.pack(np.full(count, 0.5), np.arange(count))
        records.append(encode_record(SampledRequest(
            request_id=f"bench-{event}", ts=1.0, request_ts=1.0, model_version="v", sampling_probability=1.0,
            request=msgspec.json.encode(body), scores=scores, positions=positions)))
    log.append(records)
    rates = {}
    with teacher_process(tmp / "teacher", log_path=tmp / "triton.log") as (endpoints, _):
        for name, dense in (("without", None), ("with", DenseCandidates()), ):
            async def label(dense: DenseCandidates | None = dense, name: str = name) -> tuple[float, float]:
                teacher = TeacherClient(TeacherClientSettings(url=endpoints.grpc_url, teacher_version="bench"),
                                        Encoder(dataset.schema, "teacher"))
                store = SharedLabelStore(LogLocation.parse(f"file:{tmp / ('labels-' + name)}"), "bench")
                source = open_source(LogLocation.parse(f"file:{tmp / 'samples'}"), "bench", f"bench-{name}")
                labeller = Labeller(dataset, source, store, teacher, lambda payload, reason: None, dense)
                started = time.perf_counter()
                while await labeller.step():
                    pass
                seconds = time.perf_counter() - started
                await teacher.close()
                store.close()
                source.close()
                report = labeller.report
                return report.labelled / seconds, report.candidates_a_request or 0.0

            rates[name] = asyncio.run(label())
    (rate_on, cand_on), (rate_off, cand_off) = rates["with"], rates["without"]
    results.add(Row(SECTION, "labeller throughput, dense labels on (sample log -> Triton seq-xs -> label log)",
                    rate_on, "requests/s", "dense labels off", rate_off, ratio=rate_on / rate_off,
                    note=f"{len(events)} sampled requests of 21 candidates; teacher candidates a request: "
                         f"{cand_on:.1f} with, {cand_off:.1f} without", command=COMMAND))
