# The distill worker: black-box teacher client, debiasing, student training (batch under torchrun, or the
# stream with hot standbys), export, gate and promotion.
# Build from the repository root:  docker build -f deploy/docker/worker.Dockerfile -t recdistill-worker .
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
COPY pyproject.toml README.md LICENSE ./
COPY protos ./protos
COPY recdistill ./recdistill
COPY teacher_service ./teacher_service
COPY student_server ./student_server
COPY distill_worker ./distill_worker
RUN pip install --extra-index-url https://download.pytorch.org/whl/cpu . \
    && useradd --uid 10001 --create-home recdistill

USER 10001
# The prepared dataset, the registry and the worker state (checkpoints, label store) are volumes; the
# worker state is shared by the active worker and its standbys.
VOLUME ["/data", "/registry", "/state"]
EXPOSE 9100
ENTRYPOINT ["recdistill", "worker", "run"]
CMD ["--mode", "stream", "--data", "/data", "--registry", "/registry", "--state-dir", "/state", "--metrics-port", "9100"]
