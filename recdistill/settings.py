"""Settings of the shared core (data cache, dataset source). Services define their own settings."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class DataSettings(BaseSettings):
    """Where datasets are cached and which pinned source provides MovieLens-100K."""

    model_config = SettingsConfigDict(env_prefix="RECDISTILL_", extra="ignore")

    cache_dir: Path = Field(default=Path.home() / ".cache" / "recdistill")
    recbole_version: str = "1.2.1"
    # sha256 of recbole-1.2.1-py3-none-any.whl as published on PyPI.
    recbole_sha256: str = "9c9948202011f37eb0a7c6768129313f00d6403ad221ec940d5e2d5d5f33a407"
    split_fractions: tuple[float, float] = (0.8, 0.9)
    slate_negatives: int = 20
    seed: int = 0
