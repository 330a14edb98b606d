"""A scenario's address: every name its server, trainer and registry use, worked out in one place.

The rule is that the schema's first scenario keeps every name it had before scenarios existed (a
one-scenario deployment is laid out as it always was); every other scenario gets names of its own:

| what | the first scenario | another scenario `S` |
| --- | --- | --- |
| registry folder | `registry/` | `registry/scenarios/S/` |
| trainer state folder | `state_dir/` | `state_dir/scenarios/S/` |
| sample-log consumer group (and trainer lease) | `distill-worker` | `distill-worker-S` |
| fleet registry key prefix (Valkey) | `recdistill:registry` | `recdistill:registry:scenario:S` |
| a record served without a scenario | counts as its own | does not |
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from recdistill.core.features.schema import FeatureSchema
from recdistill.core.samplelog.entry import DEFAULT_GROUP

SCENARIOS_DIR = "scenarios"  # not a version name: the other scenarios' registries and states live under it
REGISTRY_KEY_PREFIX = "recdistill:registry"


@dataclass(frozen=True, slots=True)
class ScenarioPlace:
    """Where one declared scenario lives; build it with `of` (the schema says which scenario is first)."""

    name: str
    first: bool

    @classmethod
    def of(cls, schema: FeatureSchema, name: str | None = None) -> ScenarioPlace:
        """The place of scenario `name` (the first when None); `UnknownScenarioError` names the declared ones."""
        spec = schema.scenario(name)
        return cls(spec.name, spec.name == schema.scenario_names[0])

    @classmethod
    def every(cls, schema: FeatureSchema) -> list[ScenarioPlace]:
        return [cls.of(schema, name) for name in schema.scenario_names]

    def registry(self, root: Path) -> Path:
        """Its versions, state.json and gate anchor, under the registry `root`."""
        return root if self.first else root / SCENARIOS_DIR / self.name

    def state(self, state_dir: Path) -> Path:
        """Its trainer's own state (batch student, stream checkpoint, dead letters); the label store stays at
        `state_dir`, shared, so a request labelled for one scenario is not sent to the teacher again."""
        return state_dir if self.first else state_dir / SCENARIOS_DIR / self.name

    @property
    def consumer_group(self) -> str:
        """Its trainer's consumer group on the sample log, also the name of its trainer lease."""
        return DEFAULT_GROUP if self.first else f"{DEFAULT_GROUP}-{self.name}"

    @property
    def store_prefix(self) -> str:
        """The prefix of its keys in a fleet's shared registry store."""
        return REGISTRY_KEY_PREFIX if self.first else f"{REGISTRY_KEY_PREFIX}:scenario:{self.name}"

    def serves(self, record_scenario: str | None) -> bool:
        """Whether a sampled record served by `record_scenario` was this scenario's (records written before
        scenarios carry none: they were the first's)."""
        return record_scenario == self.name if record_scenario is not None else self.first
