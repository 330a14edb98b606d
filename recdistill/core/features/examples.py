"""The example ranking requests in `examples/`: `rank_request.json` for the default demo's schema (Instacart),
and `rank_request.<schema name>.json` for each other shipped schema. The CLI's `teacher score` and the Locust
users pick the one for the schema they serve, so the docs' commands work against what `make demo` leaves."""

from __future__ import annotations

from pathlib import Path

EXAMPLES = Path(__file__).parents[3] / "examples"
DEFAULT_EXAMPLE = "instacart"  # the schema of the default demo, whose example is plain `rank_request.json`


def example_request(schema_name: str) -> Path:
    """The shipped example request for the schema named `schema_name` (it may not exist: callers say so)."""
    return EXAMPLES / ("rank_request.json" if schema_name == DEFAULT_EXAMPLE else f"rank_request.{schema_name}.json")
