# The student ranking server: FastAPI (HTTP) + gRPC on ONNX Runtime.
# Build from the repository root:  docker build -f deploy/docker/student-server.Dockerfile -t recdistill-student .
#
# BASE: any Debian-like image with Python 3.11, its venv module and libpython: the public python:3.11-slim by
# default; `make deploy-check` builds one locally with mmdebstrap (no image registry there). The package pins
# torch, whose CPU build comes from PyTorch's index (PIP_EXTRA_INDEX_URL); a build without that index mounts a
# folder holding the wheel at /wheels (`podman build -v DIR:/wheels:ro --build-arg PIP_EXTRA_INDEX_URL= ...`).
# The three images share this build stage word for word, so a builder with a layer cache builds it once.
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

# The run stage: the virtual environment only (no sources, no build tools), as a non-root user.
FROM ${BASE}
COPY --from=build /opt/recdistill /opt/recdistill
ENV PATH=/opt/recdistill/bin:$PATH PYTHONUNBUFFERED=1 HOME=/tmp
USER 10001
# HTTP on STUDENT_PORT (8080), gRPC on STUDENT_GRPC_PORT (50051): replicas sharing a host network set their own.
EXPOSE 8080 50051
# The registry (features.json and the versions) is a volume shared by every replica.
VOLUME ["/registry"]
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s \
    CMD ["python3", "-c", "import os, sys, httpx; port = os.environ.get('STUDENT_PORT', '8080'); sys.exit(httpx.get('http://127.0.0.1:' + port + '/readyz').status_code != 200)"]
ENTRYPOINT ["recdistill", "student", "serve"]
CMD ["--registry", "/registry", "--host", "0.0.0.0"]
