"""`make deploy-check`: the deploy kit built and run for real on this machine, then torn down.

1. Engine: podman with runc, host networking and the ulimits these machines allow (a containers.conf of the
   check's own, so the machine's is untouched); podman-compose from PyPI (the Makefile installs both).
2. Images: a Debian base made locally with mmdebstrap (no image registry is reachable), then every image of
   the kit from its Dockerfile (`deploy/docker/`) and local stand-ins for the public Valkey and nginx images.
3. Volumes: a small dataset (MovieLens-100K), a teacher checkpoint and a first registry version (the batch
   phase's baseline student), made with the project's own CLI and given to the images' uid (10001).
4. The compose stack (`deploy/compose/compose.yaml`, the teacher's `cpu` profile): Valkey, the teacher on
   Triton, two student replicas behind nginx; the first version activated through the balancer's operator
   API; then the stream worker and its standby. Ranking traffic over HTTP and gRPC (v3) through the balancer,
   with clicks, all along.
5. A version promoted by the stream worker and served by both replicas; `podman kill` of a replica (traffic
   goes on through the other) and of the active worker (the standby takes the lease and trains on).
6. Health checks read by the runtime (`podman healthcheck run`), teardown (`podman-compose down`), and a
   report: printed, and in runs/deploy-check/report.json. Exit 1 when anything did not hold.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import httpx
import msgspec
import redis
import torch
import typer
from rich.console import Console

from recdistill.core._proto import ranking_v3_pb2, ranking_v3_pb2_grpc
from recdistill.core.contracts.deploy import DeployCheckReport, ImageBuild, Kill, Traffic
from recdistill.core.contracts.rank_v3 import columns_from_dict
from recdistill.core.contracts.teacher import TeacherManifest
from recdistill.core.contracts.worker import BatchReport, StreamCheckpoint
from recdistill.core.data.dataset import PreparedDataset

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
COMPOSE = ROOT / "deploy" / "compose" / "compose.yaml"
BASE_IMAGE = "localhost/recdistill-base:bookworm"
BASE_PACKAGES = "python3,python3-venv,libpython3.11,ca-certificates,libgomp1"
# Built from the kit's Dockerfiles under the names compose.yaml gives them, then the local stand-ins.
KIT = (("recdistill-student:latest", "deploy/docker/student-server.Dockerfile"),
       ("recdistill-worker:latest", "deploy/docker/worker.Dockerfile"),
       ("recdistill-teacher:latest", "deploy/docker/teacher.Dockerfile"))
STAND_INS = (("localhost/recdistill-valkey:check", "deploy/check/valkey.Dockerfile"),
             ("localhost/recdistill-nginx:check", "deploy/check/nginx.Dockerfile"))
# compose.yaml's ports on the host network: Valkey, the teacher, the balancer, the replicas, the workers.
PORTS = (6379, 8000, 8001, 8002, 8080, 50051, 8081, 50052, 8082, 50053, 9101, 9102)
REPLICAS = {"student-1": "http://127.0.0.1:8081", "student-2": "http://127.0.0.1:8082"}
WORKERS = {"worker-1": "worker", "worker-2": "worker-standby"}  # WORKER_WORKER_ID -> compose service
LB_HTTP, LB_GRPC, VALKEY = "http://127.0.0.1:8080", "127.0.0.1:50051", "redis://127.0.0.1:6379/0"
CONTAINERS_CONF = """[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
netns = "host"
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
"""

console = Console()


class CheckFailed(Exception):
    """A step that cannot go on (the report names it)."""


class Check:
    def __init__(self, out: Path, wheels: Path | None) -> None:
        self.out, self.wheels = out, wheels
        self.volumes = out / "volumes"
        self.token = secrets.token_hex(16)
        self.failures: list[str] = []
        self.stages: dict[str, float] = {}
        self.images: list[ImageBuild] = []
        self.conf = out / "containers.conf"
        self.env = {**os.environ, "CONTAINERS_CONF": str(self.conf)}
        # What compose.yaml interpolates: the check's token, images, volumes and a quick stream cadence (every
        # request sampled, an export every 300 trained examples, clicks joined after 2 s).
        self.compose_env = {**self.env, "RECDISTILL_ADMIN_TOKEN": self.token, "TEACHER_VERSION": "not-yet",
                            "RECDISTILL_VOLUMES": str(self.volumes), "VALKEY_IMAGE": STAND_INS[0][0],
                            "NGINX_IMAGE": STAND_INS[1][0], "STUDENT_SAMPLING_RATE": "1",
                            "WORKER_STREAM__EXPORT_EVERY": "300", "WORKER_STREAM__JOIN_WINDOW_S": "2"}
        self.traffic = Traffic()
        self.sent: list[tuple[float, bool]] = []  # (monotonic time, ok) of every ranking request
        self.stop_traffic = asyncio.Event()

    # ---- helpers ------------------------------------------------------------------------------
    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        console.rule(name)
        started = time.monotonic()
        try:
            yield
        finally:
            self.stages[name] = round(time.monotonic() - started, 1)
            console.print(f"[dim]{name}: {self.stages[name]} s[/dim]")

    def run(self, *command: str | Path, env: dict[str, str] | None = None, capture: bool = False,
            timeout: float = 1_800) -> str:
        """Run a command; its output goes to the console unless captured. A non-zero exit fails the check."""
        done = subprocess.run([str(part) for part in command], env=env or self.env, text=True, timeout=timeout,
                              capture_output=capture)
        if done.returncode != 0:
            tail = ((done.stdout or "") + (done.stderr or ""))[-2_000:]
            raise CheckFailed(f"`{' '.join(str(p) for p in command[:6])} ...` exited {done.returncode}\n{tail}")
        return done.stdout or ""

    def compose(self, *args: str, capture: bool = False) -> str:
        return self.run(BIN / "podman-compose", "-f", COMPOSE, "--profile", "cpu", *args, env=self.compose_env,
                        capture=capture)

    def container(self, service: str) -> str:
        names = self.run("podman", "ps", "-a", "--filter", f"label=com.docker.compose.service={service}",
                         "--filter", "label=com.docker.compose.project=recdistill", "--format", "{{.Names}}",
                         capture=True).split()
        if len(names) != 1:
            raise CheckFailed(f"service {service}: expected one container, found {names}")
        return names[0]

    def logs(self, service: str) -> str:
        """A container's last lines, both streams (the servers log to stderr)."""
        with contextlib.suppress(CheckFailed, subprocess.TimeoutExpired):
            return subprocess.run(["podman", "logs", "--tail", "30", self.container(service)], env=self.env,
                                  text=True, timeout=30, stdout=subprocess.PIPE, stderr=subprocess.STDOUT).stdout
        return ""

    async def wait(self, what: str, condition: Callable[[], bool], timeout_s: float,
                   service: str | None = None) -> float:
        started = time.monotonic()
        while True:
            with contextlib.suppress(httpx.HTTPError, redis.RedisError, OSError, ValueError, KeyError):
                if await asyncio.to_thread(condition):
                    return round(time.monotonic() - started, 1)
            if time.monotonic() - started > timeout_s:
                raise CheckFailed(f"timed out after {timeout_s:.0f} s waiting for {what}"
                                  + (f"; {service}'s last log lines:\n{self.logs(service)}" if service else ""))
            await asyncio.sleep(0.5)

    # ---- 1. engine ----------------------------------------------------------------------------
    def engine(self) -> str:
        for tool in ("podman", "mmdebstrap", "runc"):
            if shutil.which(tool) is None:
                raise CheckFailed(f"{tool} is not installed (make deploy-check installs it with apt-get)")
        if not (BIN / "podman-compose").exists():
            raise CheckFailed(f"{BIN / 'podman-compose'} is missing (make deploy-check installs it with pip)")
        self.out.mkdir(parents=True, exist_ok=True)
        self.conf.write_text(CONTAINERS_CONF)
        taken = []
        for port in PORTS:
            with contextlib.suppress(OSError), contextlib.closing(socket.socket()) as probe:
                probe.settimeout(0.2)
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    taken.append(port)
        if taken:
            raise CheckFailed(f"ports {taken} are in use; the stack runs on the host network and needs them "
                              f"(compose.yaml lists each service's ports)")
        podman = self.run("podman", "--version", capture=True).split()[-1]
        compose = self.run(BIN / "podman-compose", "--version", capture=True)
        found = re.search(r"podman-compose version ([\d.]+)", compose)
        return f"podman {podman} (runc, host network), podman-compose {found.group(1) if found else '?'}"

    # ---- 2. images ----------------------------------------------------------------------------
    def image_size_mb(self, name: str) -> float:
        return round(int(self.run("podman", "image", "inspect", "--format", "{{.Size}}", name, capture=True)) / 1e6, 1)

    def base(self) -> None:
        exists = subprocess.run(["podman", "image", "exists", BASE_IMAGE], env=self.env).returncode == 0
        started = time.monotonic()
        if not exists:
            tarball = self.out / "base.tar"
            self.run("mmdebstrap", "--variant=minbase", f"--include={BASE_PACKAGES}", "bookworm", tarball)
            self.run("podman", "import", tarball, BASE_IMAGE)
            tarball.unlink()
        self.images.append(ImageBuild(name=BASE_IMAGE, dockerfile=f"mmdebstrap minbase bookworm + {BASE_PACKAGES}",
                                      build_seconds=0.0 if exists else round(time.monotonic() - started, 1),
                                      size_mb=self.image_size_mb(BASE_IMAGE), reused=exists))

    def build(self, name: str, dockerfile: str) -> None:
        command = ["podman", "build", "--format", "docker", "--network=host", "--ulimit", "nofile=20000:20000",
                   "--ulimit", "nproc=32768:32768", "--build-arg", f"BASE={BASE_IMAGE}", "-f", dockerfile, "-t", name]
        if Path("/etc/ssl/certs").is_dir():  # the host's CA bundle, for package installs behind its proxy
            command += ["-v", "/etc/ssl/certs:/etc/ssl/certs:ro"]
        if self.wheels is not None:  # torch's CPU wheel from a local folder instead of PyTorch's index
            command += ["-v", f"{self.wheels}:/wheels:ro", "--build-arg", "PIP_EXTRA_INDEX_URL="]
        started = time.monotonic()
        self.run(*command, str(ROOT))
        seconds = round(time.monotonic() - started, 1)
        self.images.append(ImageBuild(name=name, dockerfile=dockerfile, build_seconds=seconds,
                                      size_mb=self.image_size_mb(name)))

    # ---- 3. volumes ---------------------------------------------------------------------------
    def prepare(self) -> tuple[str, str]:
        """A dataset, a teacher checkpoint and a first registry version; returns (teacher version, version)."""
        if self.volumes.exists():
            shutil.rmtree(self.volumes)
        data, checkpoint, registry, state = (self.volumes / name for name in
                                             ("data", "teacher-checkpoint", "registry", "worker-state"))
        cli = BIN / "recdistill"
        self.run(cli, "data", "prepare", "--dataset", "ml-100k", "--out", data)
        self.run(cli, "teacher", "train", "--data", data, "--out", checkpoint, "--task", "slate", "--size", "tiny",
                 "--epochs", "1", "--max-train-events", "3000")
        printed = self.run(cli, "worker", "run", "--mode", "batch", "--no-teacher", "--task", "slate", "--data", data,
                           "--registry", registry, "--state-dir", state, "--epochs", "2", "--max-train-events", "5000",
                           capture=True)
        report = msgspec.json.decode(printed[printed.rindex("\n{") + 1 if "\n{" in printed else 0:], type=BatchReport)
        version = report.published.version if report.published else None
        if not version:
            raise CheckFailed(f"the batch phase published no version: {printed[-1_000:]}")
        (self.volumes / "valkey").mkdir()
        for path in [self.volumes, *self.volumes.rglob("*")]:  # the images run as uid 10001
            os.chown(path, 10001, 10001)
        return TeacherManifest.read(checkpoint / "manifest.json").teacher_version, version

    # ---- 4-5. the stack -----------------------------------------------------------------------
    def admin(self, method: str, path: str) -> httpx.Response:
        return httpx.request(method, f"{LB_HTTP}/admin{path}", headers={"Authorization": f"Bearer {self.token}"},
                             timeout=30)

    def serving(self) -> dict[str, str]:
        """replica -> the version it serves, as the replicas report it to the shared store."""
        listed = self.admin("GET", "/versions").json()
        return {entry["replica"].split(":")[0]: entry["active"] for entry in listed["replicas"]
                if not entry.get("stale")}

    def examples_trained(self) -> int:
        path = self.volumes / "worker-state" / "stream.pt"
        if not path.exists():
            return 0
        with contextlib.suppress(Exception):  # being replaced right now: read it next time
            saved = torch.load(path, map_location="cpu", weights_only=True)
            return StreamCheckpoint.from_torch(saved, str(path)).state.examples_trained
        return 0

    def lease_holder(self) -> str | None:
        broker = redis.Redis.from_url(VALKEY)
        holders = [broker.get(key) for key in broker.keys("*:trainer")]
        values = [value.decode().rpartition("#")[0] or value.decode() for value in holders if value]
        return values[0] if values else None

    async def send(self, dataset: PreparedDataset) -> None:
        """Ranking requests through the balancer until told to stop, alternating HTTP and gRPC v3 (about 20
        a second), a click on every third through the feedback API."""
        events = itertools.cycle(dataset.split("test")[:2_000].tolist())
        async with httpx.AsyncClient(base_url=LB_HTTP, timeout=10) as client, \
                grpc.aio.insecure_channel(LB_GRPC) as channel:
            stub = ranking_v3_pb2_grpc.RankingStub(channel)
            for count in itertools.count():
                if self.stop_traffic.is_set():
                    return
                body = dataset.to_request(next(events), "slate", negatives=9)
                protocol = "http" if count % 2 == 0 else "grpc"
                ok, version, request_id = False, None, None
                try:
                    if protocol == "http":
                        response = await client.post("/v1/rank", json=body)
                        if response.status_code == 200:
                            ok, version = True, response.json()["model_version"]
                            request_id = response.json()["request_id"]
                        else:
                            self.note_error(f"HTTP {response.status_code}: {response.text[:200]}")
                    else:
                        reply = await stub.Rank(columns_from_dict(body), timeout=10)
                        ok, version, request_id = True, reply.model_version, reply.request_id
                except (httpx.HTTPError, grpc.RpcError) as exc:
                    self.note_error(f"{protocol}: {type(exc).__name__}: {str(exc)[:200]}")
                setattr(self.traffic, protocol, getattr(self.traffic, protocol) + 1)
                if not ok:
                    setattr(self.traffic, f"{protocol}_errors", getattr(self.traffic, f"{protocol}_errors") + 1)
                else:
                    self.traffic.versions_seen[version] = self.traffic.versions_seen.get(version, 0) + 1
                self.sent.append((time.monotonic(), ok))
                if ok and count % 3 == 0:
                    await self.click(client, stub, request_id, str(body["candidates"][0]["item_id"]), protocol)
                await asyncio.sleep(0.05)

    async def click(self, client: httpx.AsyncClient, stub: ranking_v3_pb2_grpc.RankingStub, request_id: str,
                    item_id: str, protocol: str) -> None:
        self.traffic.feedback += 1
        try:
            if protocol == "http":
                (await client.post("/v1/feedback", json={"request_id": request_id, "item_id": item_id,
                                                         "label": 1.0})).raise_for_status()
            else:
                await stub.Feedback(ranking_v3_pb2.FeedbackRequest(request_id=request_id, item_id=item_id, label=1.0),
                                    timeout=10)
        except (httpx.HTTPError, grpc.RpcError) as exc:
            self.traffic.feedback_errors += 1
            self.note_error(f"feedback over {protocol}: {type(exc).__name__}: {str(exc)[:200]}")

    def note_error(self, text: str) -> None:
        if len(self.traffic.errors) < 20:
            self.traffic.errors.append(text)

    def after(self, moment: float, settle_s: float = 0.0) -> tuple[int, int]:
        """(requests, failures) sent from `moment + settle_s` on."""
        window = [ok for sent, ok in self.sent if sent >= moment + settle_s]
        return len(window), window.count(False)

    async def restart(self, container: str, what: str, ready: Callable[[], bool], service: str) -> float | None:
        """`podman start` the killed container; seconds until `ready` (None, and a failure, if it never is)."""
        started = time.monotonic()
        try:
            await asyncio.to_thread(self.run, "podman", "start", container, capture=True)
            await self.wait(what, ready, 120, service)
        except CheckFailed as exc:
            self.failures.append(str(exc))
            return None
        return round(time.monotonic() - started, 1)

    async def kill_replica(self) -> Kill:
        container = self.container("student-1")
        killed = time.monotonic()
        await asyncio.to_thread(self.run, "podman", "kill", container, capture=True)
        await asyncio.sleep(20)  # traffic goes on through the other replica
        settled, settled_errors = self.after(killed, settle_s=5)
        if not settled or settled_errors:
            self.failures.append(f"after killing {container}: {settled_errors} of {settled} requests failed from 5 s "
                                 "after the kill on")
        back = await self.restart(container, "student-1 ready again", lambda: httpx.get(
            f"{REPLICAS['student-1']}/readyz", timeout=2).status_code == 200, "student-1")
        requests, errors = self.after(killed)
        return Kill(service="student-1", container=container, requests_after=requests, errors_after=errors,
                    recovered_seconds=0.0 if not errors else None, restarted_seconds=back,
                    recovered="every request answered by the other replica (the balancer skips the dead one)")

    async def kill_worker(self) -> Kill:
        holder = await asyncio.to_thread(self.lease_holder)
        if holder not in WORKERS:
            raise CheckFailed(f"the trainer lease is held by {holder!r}, not by one of {sorted(WORKERS)}")
        service = WORKERS[holder]
        container = self.container(service)
        trained = await asyncio.to_thread(self.examples_trained)
        killed = time.monotonic()
        await asyncio.to_thread(self.run, "podman", "kill", container, capture=True)
        took_over = None
        try:
            took_over = await self.wait(
                "the standby to take the lease and train on",
                lambda: self.lease_holder() not in (None, holder) and self.examples_trained() > trained, 180,
                WORKERS[({*WORKERS} - {holder}).pop()])
        except CheckFailed as exc:
            self.failures.append(str(exc))
        port = 9101 if service == "worker" else 9102
        back = await self.restart(container, f"{service} standing by again", lambda: httpx.get(
            f"http://127.0.0.1:{port}/metrics", timeout=2).status_code == 200, service)
        requests, errors = self.after(killed)
        if errors:
            self.failures.append(f"{errors} of {requests} ranking requests failed after the worker was killed")
        return Kill(service=service, container=container, requests_after=requests, errors_after=errors,
                    recovered_seconds=took_over, restarted_seconds=back,
                    recovered="the standby holding the trainer lease and training past the killed worker's checkpoint")

    async def stack(self, teacher_version: str, first: str) -> dict:
        self.compose_env["TEACHER_VERSION"] = teacher_version
        figures: dict = {"promoted": [], "swap_seconds": None, "kills": []}
        with self.stage("start Valkey, the teacher, two replicas and the balancer"):
            await asyncio.to_thread(self.compose, "up", "-d", "--no-build", "valkey", "teacher-cpu", "student-1",
                                    "student-2", "lb")
            await self.wait("Valkey", lambda: redis.Redis.from_url(VALKEY).ping(), 60, "valkey")
            await self.wait("the teacher on Triton", lambda: httpx.get(
                "http://127.0.0.1:8000/v2/health/ready", timeout=2).status_code == 200, 300, "teacher-cpu")
            for name, url in REPLICAS.items():
                await self.wait(name, lambda url=url: httpx.get(f"{url}/healthz", timeout=2).status_code == 200, 120,
                                name)
            activated = await asyncio.to_thread(self.admin, "POST", f"/versions/{first}/activate")
            if activated.status_code != 200:
                raise CheckFailed(f"activating {first} through the balancer: {activated.status_code} {activated.text}")
            for name, url in REPLICAS.items():
                await self.wait(f"{name} ready on {first}", lambda url=url: httpx.get(
                    f"{url}/readyz", timeout=2).status_code == 200, 60, name)
        dataset = PreparedDataset(self.volumes / "data")
        traffic = asyncio.create_task(self.send(dataset))
        try:
            with self.stage("start the stream worker and its standby; wait for a hot swap"):
                await asyncio.to_thread(self.compose, "up", "-d", "--no-build", "worker", "worker-standby")
                started = time.monotonic()

                def swapped() -> bool:
                    serving = self.serving()
                    return set(serving) == set(REPLICAS) and len(set(serving.values())) == 1 and \
                        first not in serving.values()
                await self.wait("a promoted version served by both replicas", swapped, 600, "worker")
                figures["swap_seconds"] = round(time.monotonic() - started, 1)
            with self.stage("kill a replica under traffic"):
                figures["kills"].append(await self.kill_replica())
            with self.stage("kill the active worker"):
                figures["kills"].append(await self.kill_worker())
            with self.stage("health checks the runtime reads"):
                self.health_checks()
        finally:
            self.stop_traffic.set()
            await traffic
        figures["serving"] = await asyncio.to_thread(self.serving)
        figures["promoted"] = sorted({v for v in self.traffic.versions_seen if v != first} |
                                     set(figures["serving"].values()) - {first})
        return figures

    def health_checks(self) -> None:
        for service in ("valkey", "teacher-cpu", "student-1", "student-2", "worker", "worker-standby"):
            container = self.container(service)
            done = subprocess.run(["podman", "healthcheck", "run", container], env=self.env, capture_output=True,
                                  text=True, timeout=60)
            verdict = "healthy" if done.returncode == 0 else f"unhealthy: {(done.stdout + done.stderr).strip()[:200]}"
            image = self.run("podman", "inspect", "--format", "{{.ImageName}}", container, capture=True).strip()
            self.images = [msgspec.structs.replace(built, health_check=f"{service}: {verdict}")
                           if image.endswith(built.name) and built.health_check is None else built
                           for built in self.images]
            if done.returncode != 0:
                self.failures.append(f"{service}'s health check: {verdict}")

    def down(self) -> None:
        with contextlib.suppress(CheckFailed, subprocess.TimeoutExpired):
            self.compose("down", "-t", "10", capture=True)
        left = self.run("podman", "ps", "-a", "--filter", "label=com.docker.compose.project=recdistill",
                        "--format", "{{.Names}}", capture=True).split()
        if left:
            self.failures.append(f"containers left after `podman-compose down`: {left}")


def local_wheels() -> Path | None:
    """A folder pip already finds wheels in (PIP_FIND_LINKS, or pip's find-links setting) that holds torch's CPU
    wheel: these machines keep it on local disk, and reach no PyTorch index."""
    configured = subprocess.run([sys.executable, "-m", "pip", "config", "get", "global.find-links"],
                                capture_output=True, text=True).stdout
    for folder in f"{os.environ.get('PIP_FIND_LINKS', '')} {configured}".split():
        if Path(folder).is_dir() and any(Path(folder).glob("torch-*+cpu-*.whl")):
            return Path(folder)
    return None


def main(out: Path = typer.Option(ROOT / "runs" / "deploy-check", help="Report and volumes go here."),
         wheels: Path | None = typer.Option(None, envvar="RECDISTILL_WHEELS", help="A folder with torch's CPU "
                                            "wheel, mounted into the builds instead of PyTorch's index "
                                            "(default: pip's find-links folder, when it holds one).")) -> None:
    """Build the deploy kit's images and run its compose stack with traffic, a hot swap and two kills."""
    if os.geteuid() != 0:
        console.print("[red]error:[/red] run as root: podman here runs rootful (no user namespaces)")
        raise typer.Exit(2)
    check = Check(out, wheels or local_wheels())
    started = time.monotonic()
    figures: dict = {"promoted": [], "swap_seconds": None, "kills": [], "serving": {}}
    engine, first, trained = "", "", 0
    try:
        with check.stage("engine"):
            engine = check.engine()
        with check.stage("images"):
            check.base()
            for name, dockerfile in (*KIT, *STAND_INS):
                check.build(name, dockerfile)
        with check.stage("volumes: dataset, teacher checkpoint, first version"):
            teacher_version, first = check.prepare()
        try:
            figures = asyncio.run(check.stack(teacher_version, first))
            trained = check.examples_trained()
        finally:
            with check.stage("teardown"):
                check.down()
    except (CheckFailed, subprocess.TimeoutExpired) as exc:
        check.failures.append(str(exc))
    if check.traffic.requests and not (check.traffic.http and check.traffic.grpc):
        check.failures.append("traffic did not reach both protocols")
    report = DeployCheckReport(
        passed=not check.failures, failures=check.failures, engine=engine, images=check.images,
        traffic=check.traffic, first_version=first, promoted_versions=figures["promoted"],
        swap_seconds=figures["swap_seconds"], replicas_serving=figures["serving"], kills=figures["kills"],
        examples_trained=trained, stage_seconds=check.stages, total_seconds=round(time.monotonic() - started, 1))
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_bytes(report.to_json())
    print_report(report, out / "report.json")
    raise typer.Exit(0 if report.passed else 1)


def print_report(report: DeployCheckReport, path: Path) -> None:
    console.rule("deploy-check report")
    console.print(f"engine: {report.engine}")
    for image in report.images:
        made = "reused" if image.reused else f"built in {image.build_seconds:.0f} s"
        console.print(f"  {image.name:<40} {image.size_mb:>8.0f} MB  {made}"
                      + (f"  ({image.health_check})" if image.health_check else ""))
    t = report.traffic
    console.print(f"requests through the balancer: {t.http} HTTP ({t.http_errors} failed), {t.grpc} gRPC v3 "
                  f"({t.grpc_errors} failed), {t.feedback} clicks ({t.feedback_errors} failed)")
    console.print(f"versions seen: {t.versions_seen}; first {report.first_version}, promoted by the stream "
                  f"{report.promoted_versions} (both replicas {report.swap_seconds} s after the workers started)")
    for kill in report.kills:
        console.print(f"kill {kill.service} ({kill.container}): {kill.errors_after} of {kill.requests_after} requests "
                      f"failed after it; {kill.recovered}: {kill.recovered_seconds} s; started again and serving "
                      f"in {kill.restarted_seconds} s")
    console.print(f"examples trained by the stream: {report.examples_trained}; stages: {report.stage_seconds}")
    console.print(f"total {report.total_seconds:.0f} s; report: {path}")
    console.print("[green]PASSED[/green]" if report.passed else "[red]FAILED[/red]\n" + "\n".join(report.failures))


if __name__ == "__main__":
    typer.run(main)
