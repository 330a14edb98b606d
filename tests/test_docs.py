"""The docs a newcomer walks: the README's links lead somewhere, and the site builds with mkdocs in strict mode,
where a broken link or anchor fails the build (checked against a copy with one broken link)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
MKDOCS = str(Path(sys.executable).parent / "mkdocs")
pytestmark = pytest.mark.unit


def _build(root: Path, site: Path) -> subprocess.CompletedProcess:
    return subprocess.run([MKDOCS, "build", "--strict", "--config-file", str(root / "mkdocs.yml"), "--site-dir",
                           str(site)], capture_output=True, text=True, timeout=120, check=False)


def test_every_relative_link_in_the_readme_exists() -> None:
    text = (ROOT / "README.md").read_text()
    links = [target for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text) if "://" not in target]
    assert links, "the README points into docs/"
    assert [link for link in links if not (ROOT / link).exists()] == []
    assert len(text.splitlines()) <= 160, "the README stays a front page; the rest lives in docs/"


def test_the_docs_site_builds_strictly_and_a_broken_link_fails_it(tmp_path: Path) -> None:
    built = _build(ROOT, tmp_path / "site")
    assert built.returncode == 0, built.stderr
    assert (tmp_path / "site" / "architecture" / "index.html").exists()
    copy = tmp_path / "copy"
    shutil.copytree(ROOT / "docs", copy / "docs")
    shutil.copy(ROOT / "mkdocs.yml", copy / "mkdocs.yml")
    with (copy / "docs" / "worker.md").open("a") as handle:
        handle.write("\nSee [the missing page](missing.md).\n")
    broken = _build(copy, tmp_path / "broken-site")
    assert broken.returncode != 0
    assert "missing.md" in broken.stderr
