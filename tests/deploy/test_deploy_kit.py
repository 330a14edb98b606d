"""The deploy kit, checked without an engine (`make deploy-check` builds and runs it with podman, outside CI; no
cluster runs here): the Helm chart is rendered by a real helm binary and every manifest is validated against
the Kubernetes schemas; the compose file, the nginx config and the Dockerfiles are checked for what they must
wire together and against the chart and the settings the code reads."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from pydantic import AliasChoices, BaseModel
from pydantic_settings import BaseSettings

from distill_worker import WorkerSettings
from student_server import StudentSettings, metrics

ROOT = Path(__file__).parents[2]
CHART = ROOT / "deploy" / "helm" / "recdistill"
HELM = str(Path(sys.executable).parent / "helm")
VALUES = ["--set", "adminToken=t0ken", "--set", "teacher.version=teacher-slate-abc", "--set",
          "teacher.checkpointClaim=teacher-checkpoint"]


def _render(*extra: str) -> list[dict]:
    done = subprocess.run([HELM, "template", "rd", str(CHART), *VALUES, *extra], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def _kind(docs: list[dict], kind: str, component: str | None = None) -> dict:
    found = [d for d in docs if d["kind"] == kind and (component is None or d["metadata"]["name"].endswith(component))]
    assert len(found) == 1, (kind, component, [d["metadata"]["name"] for d in docs])
    return found[0]


def test_the_chart_lints_and_every_rendered_manifest_is_valid_kubernetes() -> None:
    lint = subprocess.run([HELM, "lint", str(CHART), *VALUES], capture_output=True, text=True, timeout=60)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    for extra in ([], ["--set", "valkey.enabled=false", "--set", "valkey.redisUrl=redis://redis.prod:6379/3",
                       "--set", "student.autoscaling.enabled=false", "--set", "existingSecret=ops-token"]):
        docs = _render(*extra)
        for doc in docs:
            kubernetes_validate.validate(doc, "1.30", strict=True)  # raises on any schema violation


def test_the_chart_wires_readiness_autoscaling_disruption_budget_gpus_and_the_shared_store() -> None:
    docs = _render()
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == sorted(["Secret", "PersistentVolumeClaim", "Deployment", "Service", "PodDisruptionBudget",
                            "HorizontalPodAutoscaler", "Deployment", "Service", "Deployment", "StatefulSet",
                            "Service"])
    student = _kind(docs, "Deployment", "student")
    pod = student["spec"]["template"]
    container = pod["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["RECDISTILL_SAMPLE_LOG"] == env["RECDISTILL_REGISTRY_STORE"] == "redis://rd-recdistill-valkey:6379/0"
    # The autoscaler's metric is one the server really exports, and it scales the student Deployment.
    hpa = _kind(docs, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == student["metadata"]["name"]
    assert hpa["spec"]["metrics"][0]["pods"]["metric"]["name"] == metrics.SCORING_QUEUE._name  # noqa: SLF001
    assert "replicas" not in student["spec"], "the HPA owns the replica count"
    pdb = _kind(docs, "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"] == student["spec"]["selector"]["matchLabels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    teacher = _kind(docs, "Deployment", "teacher")["spec"]["template"]["spec"]["containers"][0]
    assert teacher["resources"]["limits"]["nvidia.com/gpu"] == 1
    worker = _kind(docs, "Deployment", "worker")
    assert worker["spec"]["replicas"] == 2, "one active worker and a hot standby"
    args = worker["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--teacher-url") + 1] == "rd-recdistill-teacher:8001"
    assert args[args.index("--server-url") + 1] == "http://rd-recdistill-student:8080"
    # Services select the pods they front.
    for component in ("student", "teacher", "valkey"):
        service = _kind(docs, "Service", component)
        workload = next(d for d in docs if d["kind"] in ("Deployment", "StatefulSet")
                        and d["metadata"]["name"].endswith(component))
        assert service["spec"]["selector"] == workload["spec"]["selector"]["matchLabels"]


def test_missing_required_values_are_named() -> None:
    done = subprocess.run([HELM, "template", "rd", str(CHART)], capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "adminToken" in done.stderr or "teacher" in done.stderr


def _compose() -> dict:
    return yaml.safe_load((ROOT / "deploy" / "compose" / "compose.yaml").read_text())["services"]


def _listens(compose: dict) -> dict[str, set[int]]:
    """service -> the host ports it listens on (every service shares the host's network)."""
    nginx = (ROOT / "deploy" / "compose" / "nginx.conf").read_text()
    valkey = compose["valkey"]["command"]
    ports = {"valkey": {int(valkey[valkey.index("--port") + 1])}, "teacher-cpu": _exposed("teacher"),
             "lb": {int(p) for p in re.findall(r"listen (\d+)", nginx)}}
    for name, service in compose.items():
        env = service.get("environment", {})
        if "STUDENT_PORT" in env:
            ports[name] = {int(env["STUDENT_PORT"]), int(env["STUDENT_GRPC_PORT"])}
        if "WORKER_METRICS_PORT" in env:
            ports[name] = {int(env["WORKER_METRICS_PORT"])}
    return ports


def test_the_compose_file_wires_valkey_the_teacher_two_replicas_behind_a_balancer_and_the_worker() -> None:
    compose_dir = ROOT / "deploy" / "compose"
    services = _compose()
    assert {"valkey", "teacher", "teacher-cpu", "student-1", "student-2", "lb", "worker", "worker-standby"} == \
        set(services)
    for name, service in services.items():
        assert service["network_mode"] == "host", f"{name}: the host network is the one every engine here has"
        for dependency in service.get("depends_on", {}):
            assert dependency in services, (name, dependency)
        build = service.get("build")
        if build:
            assert (compose_dir / build["context"] / build["dockerfile"]).resolve().is_file(), name
    # The teacher in two profiles of one Dockerfile: the GPU one asks for a GPU, the CPU one runs anywhere; the
    # workers wait for whichever runs.
    assert services["teacher"]["profiles"] == ["gpu"]
    assert services["teacher"]["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
    assert services["teacher-cpu"]["profiles"] == ["cpu"]
    assert "deploy" not in services["teacher-cpu"]
    assert services["teacher"]["build"]["dockerfile"] == services["teacher-cpu"]["build"]["dockerfile"]
    for worker in ("worker", "worker-standby"):
        depends = services[worker]["depends_on"]
        assert depends["teacher"]["required"] is False
        assert depends["teacher-cpu"]["required"] is False
    for replica in ("student-1", "student-2"):
        env = services[replica]["environment"]
        assert env["RECDISTILL_SAMPLE_LOG"] == env["RECDISTILL_REGISTRY_STORE"] == "redis://127.0.0.1:6379/0"
    # On one network, no two services may listen on one port, and the balancer fronts each replica's own ports.
    listens = _listens(services)
    every = [port for ports in listens.values() for port in ports]
    assert len(every) == len(set(every)), listens
    nginx = (compose_dir / "nginx.conf").read_text()
    upstream = {int(p) for p in re.findall(r"server 127\.0\.0\.1:(\d+)", nginx)}
    assert upstream == listens["student-1"] | listens["student-2"]
    assert services["lb"]["volumes"][0].startswith("./nginx.conf:")


@pytest.mark.parametrize("dockerfile", ["student-server", "worker", "teacher"])
def test_dockerfiles_copy_what_exists_and_run_real_commands(dockerfile: str) -> None:
    text = (ROOT / "deploy" / "docker" / f"{dockerfile}.Dockerfile").read_text()
    for line in text.splitlines():
        if line.startswith("COPY ") and "--from" not in line:
            *sources, _ = line.split()[1:]
            for source in sources:
                assert (ROOT / source).exists(), f"{dockerfile}: COPY {source}"
    entry = re.search(r'^ENTRYPOINT \[(.*)\]$', text, re.MULTILINE)
    assert entry, dockerfile
    command = [part.strip().strip('"') for part in entry.group(1).split(",")]
    if command[0] == "recdistill":  # the CLI command exists and takes the image's arguments
        help_text = subprocess.run([str(Path(sys.executable).parent / "recdistill"), *command[1:], "--help"],
                                   capture_output=True, text=True, timeout=60)
        assert help_text.returncode == 0, help_text.stderr
        arguments = re.search(r'^CMD \[(.*)\]$', text, re.MULTILINE)
        assert arguments
        for flag in re.findall(r'"(--[a-z-]+)"', arguments.group(1)):
            assert flag in help_text.stdout, f"{dockerfile}: {flag} is not an option of {' '.join(command)}"


def _reads(settings: type[BaseSettings]) -> set[str]:
    """The environment variables a settings class reads: its prefix and each field's name, or the names a field
    declares (`AliasChoices`), and one level into a nested section (a model or a dataclass) where the class has a
    delimiter."""
    prefix = settings.model_config.get("env_prefix", "")
    nested = settings.model_config.get("env_nested_delimiter")
    names = set()
    for name, info in settings.model_fields.items():
        alias = info.validation_alias
        if isinstance(alias, AliasChoices):
            names |= {choice for choice in alias.choices if isinstance(choice, str)}
        else:
            names.add(alias if isinstance(alias, str) else f"{prefix}{name}")
        if nested and isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel):
            names |= {f"{prefix}{name}{nested}{sub}" for sub in info.annotation.model_fields}
        if nested and dataclasses.is_dataclass(info.annotation):
            names |= {f"{prefix}{name}{nested}{sub.name}" for sub in dataclasses.fields(info.annotation)}
    return {name.upper() for name in names}


def _dockerfile_list(dockerfile: str, instruction: str) -> list[str]:
    text = (ROOT / "deploy" / "docker" / f"{dockerfile}.Dockerfile").read_text()
    found = re.search(rf"^{instruction} \[(.*)\]$", text, re.MULTILINE)
    assert found, (dockerfile, instruction)
    return [part.strip().strip('"') for part in found.group(1).split(",")]


def _exposed(dockerfile: str) -> set[int]:
    text = (ROOT / "deploy" / "docker" / f"{dockerfile}.Dockerfile").read_text()
    return {int(port) for line in re.findall(r"^EXPOSE (.*)$", text, re.MULTILINE) for port in line.split()}


def test_compose_helm_and_the_dockerfiles_name_the_same_settings_ports_and_commands_the_code_reads() -> None:
    """The compose file and the chart cannot drift from each other or from the code: every environment variable
    either sets is one the component's settings read, both set the same ones (compose also gives each replica and
    worker its own ports, as they share the host's network), both run the image's command with the same flags,
    and the ports they wire are the ones the images expose and the commands listen on."""
    compose = _compose()
    docs = _render()
    helm = {component: _kind(docs, "Deployment", component)["spec"]["template"]["spec"]["containers"][0]
            for component in ("student", "worker", "teacher")}
    own_ports = {"student": {"STUDENT_PORT", "STUDENT_GRPC_PORT"}, "worker": {"WORKER_METRICS_PORT"}}
    for component, replica, settings in (("student", "student-1", StudentSettings),
                                         ("worker", "worker", WorkerSettings)):
        in_compose, in_helm = set(compose[replica]["environment"]), {e["name"] for e in helm[component]["env"]}
        assert in_compose - own_ports[component] == in_helm - own_ports[component], (component, in_compose ^ in_helm)
        assert in_compose | in_helm <= _reads(settings), (component, (in_compose | in_helm) - _reads(settings))
    # The student: the chart runs the image's own arguments; its ports are the image's (the settings' defaults),
    # and the ones the balancer presents.
    assert helm["student"]["args"] == _dockerfile_list("student-server", "CMD")
    assert "command" not in compose["student-1"], "compose runs the image's own arguments"
    defaults = StudentSettings(registry=Path("r"))
    ports = {defaults.port, defaults.grpc_port}
    assert ports == _exposed("student-server") == {p["containerPort"] for p in helm["student"]["ports"]}
    assert _listens(compose)["lb"] == ports
    # The worker: the same flags in both (their values name each one's paths and hosts); its metrics port is the
    # image's, set by the environment in both.
    flags = {arg for arg in helm["worker"]["args"] if arg.startswith("--")}
    assert flags == {arg for arg in compose["worker"]["command"] if arg.startswith("--")}
    helm_env = {e["name"]: e.get("value") for e in helm["worker"]["env"]}
    assert {int(helm_env["WORKER_METRICS_PORT"])} == _exposed("worker") == \
        {p["containerPort"] for p in helm["worker"]["ports"]}
    # The teacher: Triton's ports, which the image's command serves and the worker's teacher URL names in both.
    teacher_args = _dockerfile_list("teacher", "CMD")
    assert {int(teacher_args[teacher_args.index(flag) + 1]) for flag in ("--http-port", "--grpc-port",
                                                                         "--metrics-port")} == _exposed("teacher")
    assert _exposed("teacher") == {p["containerPort"] for p in helm["teacher"]["ports"]}
    worker_args = helm["worker"]["args"]
    compose_teacher = compose["worker"]["command"][compose["worker"]["command"].index("--teacher-url") + 1]
    helm_teacher = worker_args[worker_args.index("--teacher-url") + 1]
    assert compose_teacher.rsplit(":", 1)[1] == helm_teacher.rsplit(":", 1)[1] == str(teacher_args[
        teacher_args.index("--grpc-port") + 1])


def test_the_images_run_as_a_non_root_user_with_a_health_check_and_no_build_tools() -> None:
    docs = _render()
    for component in ("student", "worker", "teacher"):  # the chart runs each as the image's user
        pod = _kind(docs, "Deployment", component)["spec"]["template"]["spec"]
        assert pod["securityContext"] == {"runAsNonRoot": True, "runAsUser": 10001}, component
    for dockerfile in ("student-server", "worker", "teacher"):
        text = (ROOT / "deploy" / "docker" / f"{dockerfile}.Dockerfile").read_text()
        final = text[text.rindex("\nFROM "):]  # the run stage
        assert "COPY --from=build /opt/recdistill /opt/recdistill" in final, dockerfile
        assert re.search(r"^USER 10001$", final, re.MULTILINE), dockerfile
        assert re.search(r"^HEALTHCHECK .*\n\s+CMD \[", final, re.MULTILINE), dockerfile
        assert "pip install" not in final, f"{dockerfile}: the run stage builds nothing"
        assert "apt-get" not in final, dockerfile
