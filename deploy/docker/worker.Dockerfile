# The distill worker: black-box teacher client, debiasing, student training (batch under torchrun, or the
# stream with hot standbys), export, gate and promotion.
# Build from the repository root:  docker build -f deploy/docker/worker.Dockerfile -t recdistill-worker .
# BASE and the torch wheel: as in student-server.Dockerfile (the same build stage).
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
# The prepared dataset, the registry and the worker state (checkpoints, label store) are volumes; the
# worker state is shared by the active worker and its standbys.
VOLUME ["/data", "/registry", "/state"]
# Metrics on WORKER_METRICS_PORT (9100): workers sharing a host network set their own.
ENV WORKER_METRICS_PORT=9100
EXPOSE 9100
# Alive while its metrics endpoint answers (the active worker and a hot standby alike).
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s \
    CMD ["python3", "-c", "import os, sys, httpx; port = os.environ.get('WORKER_METRICS_PORT', '9100'); sys.exit(httpx.get('http://127.0.0.1:' + port + '/metrics').status_code != 200)"]
ENTRYPOINT ["recdistill", "worker", "run"]
CMD ["--mode", "stream", "--data", "/data", "--registry", "/registry", "--state-dir", "/state"]
