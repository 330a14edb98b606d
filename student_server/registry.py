"""The model registry as the server sees it: stage (verify + load + probe + warm up), activate
(atomic swap), roll back, delete. The state store is the source of truth for the active version, so it
survives restarts and reaches every server process: `state.json` in the registry (each process polls
it), or with a fleet, a key in Redis / Valkey with a pub/sub notification (`recdistill.core.registry_store`)."""

from __future__ import annotations

import logging
import shutil
import threading
import uuid
from pathlib import Path

import numpy as np

from recdistill.core.artifact import (
    ArtifactError,
    VersionNotFoundError,
    check_version_name,
    read_anchor,
    read_manifest,
    sha256_bytes,
)
from recdistill.core.contracts.admin import VersionEntry
from recdistill.core.contracts.registry import Holdback, RegistryState
from recdistill.core.data.synthetic import probe_request
from recdistill.core.errors import ConflictError
from recdistill.core.features.encoder import Encoder
from recdistill.core.registry_store import FileStateStore, StateStore
from student_server.scoring import Scorer

logger = logging.getLogger(__name__)
Tensors = dict[str, np.ndarray]


def staging_probes(encoder: Encoder, max_candidates: int, max_batch: int) -> list[tuple[str, Tensors]]:
    """The request shapes a version must serve before it may: every pairing of a history of 0, 1, a few and
    the view's most events with 1, a few, the usual 100 and the most candidates allowed, one request at a
    time; then batches of 2 and of the batcher's most requests, mixing those histories and candidate counts
    (a graph with a fixed batch or history dimension fails here, not on live traffic)."""
    schema = encoder.schema
    histories = sorted({0, 1, min(3, encoder.history_len), encoder.history_len})
    counts = sorted({1, min(7, max_candidates), min(100, max_candidates), max_candidates})

    def encode(bodies: list[dict]) -> Tensors:
        return encoder.encode_requests([schema.parse_request(body) for body in bodies])[0]

    probes = [(f"1 request, {h} history events, {n} candidates", encode([probe_request(schema, n, h)]))
              for h in histories for n in counts]
    for batch in sorted({2, max_batch}):
        bodies = [probe_request(schema, counts[i % len(counts)], histories[-1 - i % len(histories)])
                  for i in range(batch)]
        probes.append((f"a batch of {batch} requests with {histories[0]}-{histories[-1]} history events and "
                       f"{counts[0]}-{counts[-1]} candidates", encode(bodies)))
    return probes


class ModelRegistry:
    def __init__(self, root: Path, encoder: Encoder, ort_threads: int, warmup_runs: int,
                 max_candidates: int = 100, store: StateStore | None = None, max_batch: int = 32,
                 providers: tuple[str, ...] = ("CPUExecutionProvider",), scenario: str | None = None) -> None:
        self.root = Path(root).resolve()
        self.scenario = scenario  # a version trained for another scenario is refused
        self.store = store or FileStateStore(self.root)
        self.encoder = encoder
        self.ort_threads = ort_threads
        self.providers = providers
        self.warmup_runs = warmup_runs
        self._staged: dict[str, Scorer] = {}
        self._active: Scorer | None = None
        self._holdback: tuple[Holdback, Scorer] | None = None  # an A/B test's control arm
        self._lock = threading.Lock()  # serialises operator actions; requests never take it
        self._probes = staging_probes(encoder, max_candidates, max_batch)
        self._warmup = encoder.encode_requests([encoder.schema.parse_request(
            probe_request(encoder.schema, min(100, max_candidates), encoder.history_len))])[0]

    @property
    def active(self) -> Scorer | None:
        return self._active

    @property
    def holdback(self) -> Holdback | None:
        held = self._holdback
        return held[0] if held else None

    def scorer_for(self, user_id: str) -> Scorer | None:
        """The version that serves this user: the holdback's for the users it holds, else the active one."""
        held = self._holdback  # one read: a concurrent change gives the old pair or the new, never a mix
        if held is not None and held[0].holds(user_id):
            return held[1]
        return self._active

    def _version_dir(self, version: str) -> Path:
        link = self.root / check_version_name(version)
        if link.is_symlink():  # versions are real directories; a link could alias (and delete) another
            raise ArtifactError(f"version {version!r} is a symbolic link, not a version directory")
        path = link.resolve()
        if path.parent != self.root:  # never read outside the registry
            raise ArtifactError(f"version {version!r} resolves outside the registry")
        return path

    def list_versions(self) -> list[VersionEntry]:
        state = self.store.read()
        out = []
        present = self.root.iterdir() if self.root.is_dir() else ()  # a scenario nothing was published to yet
        for path in sorted(p for p in present if p.is_dir() and not p.name.startswith(".")):
            try:
                manifest = read_manifest(self.root, path.name)
            except ArtifactError:
                continue
            out.append(VersionEntry(version=path.name, active=path.name == state.active,
                                    holdback=state.holdback is not None and path.name == state.holdback.version,
                                    staged=path.name in self._staged, manifest=manifest))
        return out

    def stage(self, version: str) -> Scorer:
        with self._lock:
            return self._stage(version)

    def _stage(self, version: str) -> Scorer:
        if version in self._staged:
            return self._staged[version]
        directory = self._version_dir(version)
        manifest = read_manifest(self.root, version)
        model_path = directory / "model.onnx"
        if not model_path.is_file():
            raise ArtifactError(f"version {version}: model.onnx is missing")
        if sha256_bytes(model_path.read_bytes()) != manifest.sha256:
            raise ArtifactError(f"version {version}: model.onnx does not match the sha256 in its manifest")
        first = self.encoder.schema.scenario(None).name  # a manifest without a scenario is the first's
        if (manifest.scenario or first) != (self.scenario or first):
            raise ArtifactError(f"version {version} was trained for scenario {manifest.scenario or first!r}, this "
                                f"registry serves {self.scenario or first!r}")
        if manifest.schema_hash != self.encoder.schema.hash:
            raise ArtifactError(f"version {version} was built for feature schema {manifest.schema_hash}, "
                                f"this server encodes with {self.encoder.schema.hash}")
        try:
            scorer = Scorer.load(model_path, version, manifest, self.ort_threads, self.encoder, self.providers)
        except Exception as exc:  # noqa: BLE001 - any load failure refuses the version
            raise ArtifactError(f"version {version}: model cannot be loaded ({exc})") from None
        for shape, probe in self._probes:
            try:
                output = scorer.run(probe)
            except Exception as exc:  # noqa: BLE001 - a shape it cannot run refuses the version
                raise ArtifactError(f"version {version}: cannot run on {shape} ({exc})") from None
            expected = probe["cand_item"].shape
            if output.shape != expected or not np.all(np.isfinite(output) & (output >= 0) & (output <= 1)):
                raise ArtifactError(f"version {version}: on {shape} the output has shape {output.shape} (want "
                                    f"{expected}) or values that are not finite probabilities in [0, 1]")
        for _ in range(self.warmup_runs):
            scorer.run(self._warmup)
        self._staged[version] = scorer
        logger.info("staged version %s", version)
        return scorer

    def activate(self, version: str) -> Scorer:
        with self._lock:
            scorer = self._stage(version)
            directory = self._version_dir(version)

            def activated(state: RegistryState) -> RegistryState:
                # Checked under the store's lock: another process may have deleted it since it was staged here.
                if not directory.is_dir():
                    raise VersionNotFoundError(f"version {version} was deleted from the registry meanwhile")
                return state.activated(version)

            self.store.update(activated)
            self._swap(scorer)
            return scorer

    def _swap(self, scorer: Scorer) -> None:
        previous = self._active
        self._active = scorer  # one reference assignment: requests take whichever they read
        held = self.holdback
        if previous is not None and previous.version not in (scorer.version, held.version if held else None):
            # Unstage the old session; batches still holding it finish on it and then release it.
            self._staged.pop(previous.version, None)
        logger.info("active version: %s (was %s)", scorer.version, previous.version if previous else None)

    def set_holdback(self, holdback: Holdback | None) -> None:
        """Start an A/B test (`holdback.share` of users stay on `holdback.version`), or end it (None)."""
        with self._lock:
            self.store.read().with_holdback(holdback)  # refuse before loading the version
            scorer = self._stage(holdback.version) if holdback is not None else None
            self.store.update(lambda state: state.with_holdback(holdback))
            self._hold(holdback, scorer)

    def _hold(self, holdback: Holdback | None, scorer: Scorer | None) -> None:
        previous = self.holdback.version if self.holdback else None
        self._holdback = (holdback, scorer) if holdback is not None and scorer is not None else None
        active = self._active.version if self._active else None
        if previous and previous not in (holdback.version if holdback else None, active):
            self._staged.pop(previous, None)  # the old control arm's session, unless it still serves
        logger.info("holdback: %s (was %s)", holdback, previous)

    def rollback(self) -> Scorer:
        with self._lock:
            target = self.store.read().rolled_back().active  # refuse before loading the version
            scorer = self._stage(str(target))

            def roll_back(state: RegistryState) -> RegistryState:
                rolled = state.rolled_back()
                if rolled.active != target:  # another operator changed the history meanwhile
                    raise ConflictError(f"the registry changed during the roll-back (active: {state.active}); "
                                        "nothing was rolled back")
                return rolled

            self.store.update(roll_back)
            self._swap(scorer)
            return scorer

    def delete(self, version: str) -> None:
        with self._lock:
            directory = self._version_dir(version)
            if not directory.is_dir():
                raise VersionNotFoundError(f"version {version} not found in the registry")
            anchor = read_anchor(self.root)
            if anchor is not None and anchor.version == version:
                raise ConflictError(f"version {version} is the promotion gate's anchor (gate-anchor.json): every "
                                    "candidate is held to it; it cannot be deleted")
            trash = self.root / f".deleting-{version}-{uuid.uuid4().hex[:8]}"

            def without(state: RegistryState) -> RegistryState:
                # Out of the state (refused while it is active or held back) and out of sight, under the store's
                # lock, so an activation in another process either comes first (and this is refused) or finds
                # the version gone; a retried change (Redis) finds it moved already.
                changed = state.without(version)
                if directory.is_dir():
                    directory.rename(trash)
                return changed

            try:
                self.store.update(without)
            except BaseException:
                if trash.is_dir() and not directory.exists():
                    trash.rename(directory)  # the state kept it: so does the disk
                raise
            self._staged.pop(version, None)
            shutil.rmtree(trash)

    def sync_with_state(self) -> bool:
        """Follow the state store (another process or replica may have activated, or started or ended an
        A/B test); True when the active version changed."""
        with self._lock:  # read under the lock: an activation in this process cannot come between read and swap
            state = self.store.read()
            if state.holdback != self.holdback:
                self._hold(state.holdback, self._stage(state.holdback.version) if state.holdback else None)
            active = state.active
            if active is None or (self._active is not None and self._active.version == active):
                return False
            self._swap(self._stage(active))
            return True
