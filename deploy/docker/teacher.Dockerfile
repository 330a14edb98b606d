# The teacher behind NVIDIA Triton: `recdistill teacher serve` runs the Triton Inference Server shipped in the
# nvidia-pytriton wheel with the teacher in its Python backend (KServe v2 over gRPC 8001 and HTTP 8000, metrics
# on 8002). The checkpoint is a volume at /models/teacher-checkpoint.
# Build from the repository root:  docker build -f deploy/docker/teacher.Dockerfile -t recdistill-teacher .
# BASE and the torch wheel: as in student-server.Dockerfile (the same build stage). The default is torch's CPU
# build; for a GPU, build with a CUDA index of PyTorch's (--build-arg PIP_EXTRA_INDEX_URL=.../whl/cu128) and
# run with the GPU passed in: `--device auto` then serves on CUDA. (A stand-alone Triton of your own can serve
# the same teacher from the model repository in deploy/triton instead.)
ARG BASE=python:3.11-slim

FROM ${BASE} AS build
ARG PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_FIND_LINKS=/wheels \
    PIP_EXTRA_INDEX_URL=${PIP_EXTRA_INDEX_URL}
WORKDIR /src
COPY pyproject.toml setup.py README.md LICENSE ./
COPY protos ./protos
COPY recdistill ./recdistill
COPY teacher_service ./teacher_service
COPY student_server ./student_server
COPY distill_worker ./distill_worker
RUN python3 -m venv /opt/recdistill && /opt/recdistill/bin/pip install .

FROM ${BASE}
COPY --from=build /opt/recdistill /opt/recdistill
ENV PATH=/opt/recdistill/bin:$PATH PYTHONUNBUFFERED=1 HOME=/tmp
USER 10001
EXPOSE 8000 8001 8002
VOLUME ["/models/teacher-checkpoint"]
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s \
    CMD ["python3", "-c", "import sys, httpx; sys.exit(httpx.get('http://127.0.0.1:8000/v2/health/ready').status_code != 200)"]
ENTRYPOINT ["recdistill", "teacher", "serve"]
CMD ["--checkpoint", "/models/teacher-checkpoint", "--http-port", "8000", "--grpc-port", "8001", "--metrics-port", "8002"]
