"""Reference servers for the student benchmark: a plain FastAPI + pydantic endpoint and Triton
(PyTriton) around the same ONNX model, and protocol floors that do no work at all (a bare uvicorn ASGI
app, a grpc.aio server, grpcio's sync server), each answering with a fixed body of a ranking response's size, and
the ranking core alone behind grpc.aio (the least a gRPC front end on grpcio can cost).
`python -m benchmarks.references plain|triton|echo-http|echo-grpc|echo-grpc-sync|grpc-core --port P
[--registry DIR --version V] [--threads N] [--request V3_BODY]`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, StrictStr, create_model

from recdistill.core.contracts.onnx import session_options
from recdistill.core.features.encoder import Encoder
from recdistill.core.features.schema import FeatureSchema
from recdistill.core.features.spec import Entity, SchemaSpec


def _load(registry: Path, version: str) -> tuple[Encoder, ort.InferenceSession]:
    encoder = Encoder(FeatureSchema.load(registry / "features.json"), "student")
    session = ort.InferenceSession(str(registry / version / "model.onnx"), session_options(1),
                                   providers=["CPUExecutionProvider"])
    return encoder, session


# What a first version usually looks like: the request as pydantic models, here built from the same
# schema file (the shipped server decodes the same shape with msgspec, recdistill.core.features.request).
# The encoder reads either by attribute.
_STRICT = ConfigDict(extra="forbid", frozen=True)
_NUMBER = StrictInt | StrictFloat


_TYPES: dict[str, Any] = {"list": list[StrictStr], "number": _NUMBER, "category": StrictStr | _NUMBER}


def _columns(spec: SchemaSpec, entity: Entity) -> dict[str, Any]:
    return {column: (_TYPES[spec.column_kind(entity, column)] | None, None)
            for column in dict.fromkeys(f.source for f in spec.entity_features(entity))}


def plain_request_model(spec: SchemaSpec) -> type[BaseModel]:
    user = create_model("PlainUser", __config__=_STRICT, user_id=(StrictStr | StrictInt, ...), **_columns(spec, "user"))
    event_fields: dict[str, Any] = {"item_id": (StrictStr | StrictInt, ...), "ts": (_NUMBER | None, None)}
    if spec.source.action and spec.sequence.action:
        event_fields["action"] = (StrictStr | _NUMBER | None, None)
    if spec.sequence.value:
        event_fields["value"] = (_NUMBER | None, None)
    event = create_model("PlainEvent", __config__=_STRICT, **event_fields)
    features = create_model("PlainFeatures", __config__=_STRICT, **_columns(spec, "item"))
    candidate = create_model("PlainCandidate", __config__=_STRICT, item_id=(StrictStr | StrictInt, ...),
                             features=(features | None, None))
    context = create_model("PlainContext", __config__=_STRICT, ts=(_NUMBER | None, None), **_columns(spec, "context"))
    return create_model(
        "PlainRequest", __config__=_STRICT, user=(user, ...),
        history=(list[event], Field(default=[], max_length=20_000)),  # type: ignore[valid-type]
        candidates=(list[candidate], Field(min_length=1, max_length=1_000)),  # type: ignore[valid-type]
        request_id=(StrictStr | None, None), context=(context | None, None))


class PlainResponse(BaseModel):
    request_id: str | None
    scores: list[float]
    ranking: list[str]


def plain_app(registry: Path, version: str) -> FastAPI:
    """What a first version usually looks like: pydantic body, sync endpoint, one session."""
    encoder, session = _load(registry, version)
    app = FastAPI()
    request_model = plain_request_model(encoder.schema.spec_model)

    def rank(request: Any) -> PlainResponse:
        tensors, _ = encoder.encode_requests([request])
        scores = session.run(None, tensors)[0][0]
        ids = [str(c.item_id) for c in request.candidates]  # type: ignore[attr-defined]
        return PlainResponse(request_id=request.request_id, scores=scores.tolist(),  # type: ignore[attr-defined]
                             ranking=[ids[i] for i in np.argsort(-scores)])

    rank.__annotations__ = {"request": request_model, "return": PlainResponse}  # the schema's model, for FastAPI
    app.post("/v1/rank", response_model=PlainResponse)(rank)

    @app.get("/readyz")
    def ready() -> dict[str, bool]:
        return {"ready": True}

    return app


def triton_request_bodies(tensors: dict[str, np.ndarray]) -> tuple[bytes, int, bytes]:
    """The same inference request for Triton as KServe v2 HTTP with binary tensors (body, JSON header
    length) and as a serialised gRPC ModelInferRequest, so clients send it without per-call work."""
    import tritonclient.http as triton_http
    from tritonclient.grpc import service_pb2
    from tritonclient.utils import np_to_triton_dtype

    inputs = []
    grpc_request = service_pb2.ModelInferRequest(model_name="student")
    for name, array in tensors.items():
        datatype = np_to_triton_dtype(array.dtype)
        http_input = triton_http.InferInput(name, list(array.shape), datatype)
        http_input.set_data_from_numpy(array, binary_data=True)
        inputs.append(http_input)
        grpc_input = grpc_request.inputs.add(name=name, datatype=datatype)
        grpc_input.shape.extend(array.shape)
        grpc_request.raw_input_contents.append(np.ascontiguousarray(array).tobytes())
    grpc_request.outputs.add(name="probability")
    output = triton_http.InferRequestedOutput("probability", binary_data=True)
    http_body, json_size = triton_http.InferenceServerClient.generate_request_body(inputs, outputs=[output])
    return http_body, json_size or len(http_body), grpc_request.SerializeToString()


def serve_triton(registry: Path, version: str, grpc_port: int, http_port: int, metrics_port: int) -> None:
    from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
    from pytriton.triton import Triton, TritonConfig

    from recdistill.core.contracts.teacher import TeacherTensorSpec
    from teacher_service import ensure_libpython_on_library_path

    ensure_libpython_on_library_path()
    encoder, session = _load(registry, version)

    def infer(requests: list) -> list[dict[str, np.ndarray]]:
        return [{"probability": session.run(None, dict(r.data))[0]} for r in requests]

    config = TritonConfig(http_address="127.0.0.1", http_port=http_port, grpc_address="127.0.0.1",
                          grpc_port=grpc_port, metrics_address="127.0.0.1", metrics_port=metrics_port)
    with Triton(config=config) as triton:
        spec = TeacherTensorSpec.from_schema(encoder.schema)  # the same tensors as the teacher's
        triton.bind("student", infer, [Tensor(name=t.name, dtype=t.numpy_dtype, shape=t.dims) for t in spec.inputs],
                    [Tensor(name="probability", dtype=np.float32, shape=(-1,))],
                    config=ModelConfig(max_batch_size=64, batcher=DynamicBatcher(max_queue_delay_microseconds=500)))
        triton.serve()


ECHO_BODY = b"{" + b" " * 2_000 + b"}"  # about the size of a 100-candidate ranking response


def serve_echo_http(port: int) -> None:
    import uvicorn

    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(ECHO_BODY)).encode())]

    async def app(scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        message = await receive()
        while message.get("more_body", False):
            message = await receive()
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": ECHO_BODY})

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False, lifespan="off")


def _echo_on(server: Any, rank: Any, port: int) -> None:
    """The echo's method (the ranking path, raw bytes in and out) on a grpcio server (sync or aio), bound to
    `port` on localhost."""
    import grpc

    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(
        "recdistill.v2.Ranking", {"Rank": grpc.unary_unary_rpc_method_handler(rank)})])
    server.add_insecure_port(f"127.0.0.1:{port}")


def serve_echo_grpc(port: int) -> None:
    """Answers the ranking method path with fixed bytes (no (de)serialisation) on grpc.aio + uvloop,
    the stack the student server runs its gRPC on."""
    import asyncio

    import grpc
    import uvloop

    async def rank(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return ECHO_BODY

    async def serve() -> None:
        server = grpc.aio.server()
        _echo_on(server, rank, port)
        await server.start()
        await server.wait_for_termination()

    uvloop.install()
    asyncio.run(serve())


def serve_echo_grpc_sync(port: int, threads: int) -> None:
    """The same echo on grpcio's sync server (a thread pool, no asyncio task a call): whether the floor is
    grpc.aio's or grpcio's own."""
    from concurrent import futures

    import grpc

    def rank(request: bytes, context: grpc.ServicerContext) -> bytes:
        return ECHO_BODY

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=threads))
    _echo_on(server, rank, port)
    server.start()
    server.wait_for_termination()


def serve_grpc_core(registry: Path, port: int, request: Path) -> None:
    """The shipped ranking core (limits, encoder, micro-batcher, ONNX Runtime session, sampling) behind grpc.aio
    with nothing of a protocol's own: the v3 request in `request` is read once at start, and every call ranks it
    again and answers fixed bytes. No gRPC front end on grpcio can cost less a request than this."""
    import asyncio
    import gc
    import tempfile

    import grpc
    import uvloop

    from recdistill.core._proto import ranking_v3_pb2
    from recdistill.core.contracts.rank_v3 import request_from_columns
    from student_server import StudentSettings, build_service

    async def serve() -> None:
        with tempfile.TemporaryDirectory() as samples:
            service = build_service(StudentSettings(registry=registry, sample_log=samples))
            message = ranking_v3_pb2.RankRequest.FromString(request.read_bytes())
            parsed, scenario = request_from_columns(message, service.request_types), service.scenarios.get(None)

            async def rank(payload: bytes, context: grpc.aio.ServicerContext) -> bytes:
                await service.rank(parsed, scenario)
                return ECHO_BODY

            server = grpc.aio.server()
            _echo_on(server, rank, port)
            gc.collect()
            gc.freeze()  # as the student server does once loaded
            await server.start()
            try:
                await server.wait_for_termination()
            finally:
                service.close()

    uvloop.install()
    asyncio.run(serve())


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser()
    parser.add_argument("kind", choices=["plain", "triton", "echo-http", "echo-grpc", "echo-grpc-sync", "grpc-core"])
    parser.add_argument("--registry", type=Path)
    parser.add_argument("--version")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--http-port", type=int, default=0)
    parser.add_argument("--metrics-port", type=int, default=0)
    parser.add_argument("--threads", type=int, default=16, help="echo-grpc-sync: the server's thread pool")
    parser.add_argument("--request", type=Path, help="grpc-core: the v3 ranking request it ranks on every call")
    args = parser.parse_args()
    if args.kind == "echo-http":
        serve_echo_http(args.port)
    elif args.kind == "echo-grpc":
        serve_echo_grpc(args.port)
    elif args.kind == "echo-grpc-sync":
        serve_echo_grpc_sync(args.port, args.threads)
    elif args.kind == "grpc-core":
        serve_grpc_core(args.registry, args.port, args.request)
    elif args.kind == "plain":
        uvicorn.run(plain_app(args.registry, args.version), host="127.0.0.1", port=args.port, log_level="warning")
    else:
        serve_triton(args.registry, args.version, args.port, args.http_port, args.metrics_port)


if __name__ == "__main__":
    main()
