"""Reference servers for the student benchmark, each around the same ONNX model:
a plain FastAPI + pydantic endpoint, and Triton (PyTriton) serving the ONNX session.
`python -m benchmarks.references plain|triton --registry DIR --version V --port P`."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import onnxruntime as ort
from fastapi import FastAPI
from pydantic import BaseModel

from recdistill.features.encoder import Encoder
from recdistill.features.request import RankRequest
from recdistill.features.schema import FeatureSchema
from student_server.scoring import session_options


def _load(registry: Path, version: str) -> tuple[Encoder, ort.InferenceSession]:
    encoder = Encoder(FeatureSchema.load(registry / "features.json"), "student")
    session = ort.InferenceSession(str(registry / version / "model.onnx"), session_options(1),
                                   providers=["CPUExecutionProvider"])
    return encoder, session


class PlainResponse(BaseModel):
    request_id: str | None
    scores: list[float]
    ranking: list[str]


def plain_app(registry: Path, version: str) -> FastAPI:
    """What a first version usually looks like: pydantic body, sync endpoint, one session."""
    encoder, session = _load(registry, version)
    app = FastAPI()

    @app.post("/v1/rank", response_model=PlainResponse)
    def rank(request: RankRequest) -> PlainResponse:
        tensors, _ = encoder.encode_requests([request])
        scores = session.run(None, tensors)[0][0]
        ids = [str(c.item_id) for c in request.candidates]
        return PlainResponse(request_id=request.request_id, scores=scores.tolist(),
                             ranking=[ids[i] for i in np.argsort(-scores)])

    @app.get("/readyz")
    def ready() -> dict[str, bool]:
        return {"ready": True}

    return app


def serve_triton(registry: Path, version: str, grpc_port: int, http_port: int, metrics_port: int) -> None:
    from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
    from pytriton.triton import Triton, TritonConfig

    from teacher_service.inference import input_specs
    from teacher_service.serve import ensure_libpython_on_library_path

    ensure_libpython_on_library_path()
    encoder, session = _load(registry, version)

    def infer(requests: list) -> list[dict[str, np.ndarray]]:
        return [{"probability": session.run(None, dict(r.data))[0]} for r in requests]

    config = TritonConfig(http_address="127.0.0.1", http_port=http_port, grpc_address="127.0.0.1",
                          grpc_port=grpc_port, metrics_address="127.0.0.1", metrics_port=metrics_port)
    with Triton(config=config) as triton:
        triton.bind("student", infer, [Tensor(name=n, dtype=d, shape=s) for n, d, s in input_specs(encoder.schema)],
                    [Tensor(name="probability", dtype=np.float32, shape=(-1,))],
                    config=ModelConfig(max_batch_size=64, batcher=DynamicBatcher(max_queue_delay_microseconds=500)))
        triton.serve()


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser()
    parser.add_argument("kind", choices=["plain", "triton"])
    parser.add_argument("--registry", type=Path, required=True)
    parser.add_argument("--version", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--http-port", type=int, default=0)
    parser.add_argument("--metrics-port", type=int, default=0)
    args = parser.parse_args()
    if args.kind == "plain":
        uvicorn.run(plain_app(args.registry, args.version), host="127.0.0.1", port=args.port, log_level="warning")
    else:
        serve_triton(args.registry, args.version, args.port, args.http_port, args.metrics_port)


if __name__ == "__main__":
    main()
