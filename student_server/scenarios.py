"""The scenarios one server serves (the schema's `[[scenarios]]`): each has its own encoder (the scenario's
student view), model registry (versions, the active one, a holdback, hot swaps; `ScenarioPlace` says
where) and metric children. One micro-batcher scores them all: a batch runs once per version it holds.

A request names its scenario by route (`POST /v1/scenarios/{name}/rank`) or field (gRPC `scenario`); one that
names none is served by the first declared. (A scenario's `traffic` says which sampled requests its trainer
takes, not where a request is served: a frontend that sends a source has not chosen a model by it.)"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field

from prometheus_client.metrics import MetricWrapperBase

from recdistill.core.artifact import ArtifactError
from recdistill.core.errors import BrokerUnavailableError, UnknownScenarioError
from recdistill.core.features.encoder import Encoder
from recdistill.core.features.schema import FeatureSchema
from recdistill.core.features.spec import ScenarioSpec
from recdistill.core.places import ScenarioPlace
from recdistill.core.registry_store import open_state_store
from student_server import metrics
from student_server.registry import ModelRegistry
from student_server.settings import StudentSettings

logger = logging.getLogger(__name__)
UNKNOWN = "unknown"  # the metrics' scenario label of a request that named no declared scenario
OK = {"http": "200", "grpc": "OK"}  # each ranking protocol's success status, as the metrics label it


@dataclass
class Scenario:
    spec: ScenarioSpec
    registry: ModelRegistry
    # Bound once per scenario (a labels() lookup per request is measurable): latency and success counters.
    children: dict[str, MetricWrapperBase] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def encoder(self) -> Encoder:
        """The scenario's student view, as its registry probes and scores versions with."""
        return self.registry.encoder

    def __post_init__(self) -> None:
        for protocol, ok in OK.items():
            self.children[f"{protocol}_latency"] = metrics.LATENCY.labels(endpoint="rank", protocol=protocol,
                                                                          scenario=self.name)
            self.children[f"{protocol}_ok"] = metrics.REQUESTS.labels(endpoint="rank", protocol=protocol,
                                                                      status=ok, scenario=self.name)

    def sync(self) -> bool:
        """Follow the registry's state; True (and the metric set) when the active version changed."""
        changed = self.registry.sync_with_state()
        if changed:
            metrics.set_active_version(self.name, self.registry.active.version)  # type: ignore[union-attr]
        return changed


def count_rank(scenario: Scenario | None, protocol: str, status: str, seconds: float) -> None:
    """One ranking request in the metrics: its latency and outcome under its scenario, or only its outcome
    under UNKNOWN when it named no declared scenario. Callers count before the answer leaves, so a client that
    saw it finds it counted."""
    if scenario is None:
        metrics.count_request("rank", protocol, status, UNKNOWN)
        return
    scenario.children[f"{protocol}_latency"].observe(seconds)
    if status == OK[protocol]:
        scenario.children[f"{protocol}_ok"].inc()
    else:
        metrics.count_request("rank", protocol, status, scenario.name)


class Scenarios:
    """Every scenario the schema declares, by name, the first being the default."""

    def __init__(self, scenarios: list[Scenario]) -> None:
        self.by_name = {s.name: s for s in scenarios}
        self.default = scenarios[0]

    def __iter__(self) -> Iterator[Scenario]:
        return iter(self.by_name.values())

    def get(self, name: str | None) -> Scenario:
        """By name, the default with none; an unknown one is a 404 naming the declared ones."""
        if name is None:
            return self.default
        found = self.by_name.get(name)
        if found is None:
            raise UnknownScenarioError(name, list(self.by_name))
        return found


def build_scenarios(settings: StudentSettings, schema: FeatureSchema) -> Scenarios:
    """A registry per declared scenario (created when missing and the registry is writable: replicas commonly
    mount it read-only, and its writer, the worker, makes it), each synced to its active version; a version
    that cannot be loaded at start leaves that scenario serving nothing (`/readyz` says so), not the server
    down."""
    built = []
    for spec in schema.scenarios:
        place = ScenarioPlace.of(schema, spec.name)
        root = place.registry(settings.registry)
        if not root.is_dir():
            try:
                root.mkdir(parents=True, exist_ok=True)
            except OSError as exc:  # a read-only mount: its writer makes it, and it has no versions until then
                logger.info("scenario %s: no registry at %s yet (%s)", spec.name, root, exc.strerror)
        store = open_state_store(settings.registry, settings.registry_store, place)
        registry = ModelRegistry(root, Encoder(schema, spec.view), settings.ort_threads, settings.warmup_runs,
                                 settings.max_candidates, store, settings.max_batch_requests,
                                 tuple(settings.ort_providers), scenario=spec.name)
        scenario = Scenario(spec, registry)
        try:
            scenario.sync()
        except (ArtifactError, BrokerUnavailableError) as exc:
            logger.error("scenario %s: no version is active at start-up: %s", spec.name, exc)
        built.append(scenario)
    return Scenarios(built)
