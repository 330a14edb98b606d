"""What every command shares: settings built with one precedence, their errors shown as a usage error."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar, get_origin

import typer
from pydantic import ValidationError
from pydantic_settings import BaseSettings

from recdistill.core.errors import DataError
from recdistill.core.settings import load_settings

S = TypeVar("S", bound=BaseSettings)


def settings_from_cli(cls: type[S], config: Path | None, table: str, **flags: Any) -> S:
    """`load_settings`, with a bad value (from a flag, the config file or the environment) reported as a
    usage error that names the option."""
    try:
        return load_settings(cls, config, table, **flags)
    except DataError as exc:
        raise typer.BadParameter(str(exc), param_hint="--config") from None
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = first["loc"]
        field = cls.model_fields.get(str(loc[0])) if loc else None
        keyed = field is not None and get_origin(field.annotation) is dict  # loc[-1] is a key, not a field
        name = str(loc[0] if keyed else loc[-1]) if loc else "config"
        raise typer.BadParameter(f"{first['msg']} (got {first.get('input')!r})",
                                 param_hint=f"--{name.replace('_', '-')}") from None


def shown(model: type[BaseSettings], path: str) -> str:
    """`(default: X)` for a settings field (`stream.join_window_s` walks into a section), read from the settings
    model, so no help string restates a default by hand."""
    *sections, name = path.split(".")
    owner: Any = model.model_fields[sections[0] if sections else name].get_default(call_default_factory=True)
    for section in [*sections[1:], name] if sections else []:
        owner = getattr(owner, section)
    if isinstance(owner, bool):
        return f"(default: {'on' if owner else 'off'})"
    if isinstance(owner, float):
        return f"(default: {owner:g})"
    if isinstance(owner, list | tuple):
        return f"(default: {','.join(map(str, owner)) or 'none'})"
    if isinstance(owner, dict):
        return f"(default: {','.join(f'{k}={v}' for k, v in owner.items()) or 'none'})"
    return f"(default: {'none' if owner is None else owner})"


def resolve_schema(schema: Path | None, dataset: str) -> Path:
    """The schema file given, or the one shipped for a built-in dataset; a usage error otherwise."""
    from recdistill.core.data.sources import SCHEMAS, shipped_schema

    if schema is not None:
        return schema
    builtin = dataset.partition(":")[0]
    if builtin in SCHEMAS:
        return shipped_schema(builtin)
    raise typer.BadParameter(f"your own data needs its schema file (see `recdistill data schema`) for {dataset}",
                             param_hint="--schema")
