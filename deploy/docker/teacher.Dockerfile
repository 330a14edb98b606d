# The teacher on NVIDIA Triton: the model repository in deploy/triton (Python backend) plus this package
# inside the Triton image. The checkpoint is a volume at /models/teacher-checkpoint.
# Build from the repository root:  docker build -f deploy/docker/teacher.Dockerfile -t recdistill-teacher .
FROM nvcr.io/nvidia/tritonserver:24.10-py3

ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
COPY pyproject.toml README.md LICENSE ./
COPY protos ./protos
COPY recdistill ./recdistill
COPY teacher_service ./teacher_service
COPY student_server ./student_server
COPY distill_worker ./distill_worker
RUN pip install .
COPY deploy/triton /models

EXPOSE 8000 8001 8002
VOLUME ["/models/teacher-checkpoint"]
ENTRYPOINT ["tritonserver", "--model-repository=/models"]
