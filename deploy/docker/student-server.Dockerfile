# The student ranking server: FastAPI (HTTP) + gRPC on ONNX Runtime. No torch at run time is needed for
# serving, but the package depends on it; the CPU wheel keeps the image small.
# Build from the repository root:  docker build -f deploy/docker/student-server.Dockerfile -t recdistill-student .
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
EXPOSE 8080 50051
# The registry (features.json and the versions) is a volume shared by every replica.
VOLUME ["/registry"]
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s \
    CMD python -c "import sys, httpx; sys.exit(httpx.get('http://127.0.0.1:8080/readyz').status_code != 200)"
ENTRYPOINT ["recdistill", "student", "serve"]
CMD ["--registry", "/registry", "--host", "0.0.0.0", "--port", "8080", "--grpc-port", "50051"]
