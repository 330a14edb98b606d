"""One table of teacher families: every size trains on the device it is given (`--device cpu` for one size of
each family, through the CLI), `cuda` is refused where there is none (training and serving, before anything
starts), an unknown size names every family's, and a checkpoint loads through its family's entry."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from recdistill.core.data.dataset import PreparedDataset
from recdistill.core.errors import DataError
from teacher_service.checkpoint import load_checkpoint
from teacher_service.device import resolve_device, triton_kind
from teacher_service.families import FAMILIES, architecture, family_of

RECDISTILL = str(Path(sys.executable).parent / "recdistill")
pytestmark = pytest.mark.integration


@pytest.mark.parametrize(("size", "flags"), [("tiny", []), ("seq-3xs", []), ("seq-3xs", ["--no-stack"])],
                         ids=["tiny", "seq-3xs", "seq-3xs-no-stack"])
def test_one_size_of_each_family_trains_on_the_cpu_it_was_given(ml100k: PreparedDataset, tmp_path: Path,
                                                                size: str, flags: list[str]) -> None:
    out = tmp_path / size
    done = subprocess.run([RECDISTILL, "teacher", "train", "--data", str(ml100k.directory), "--out", str(out),
                           "--task", "slate", "--size", size, "--device", "cpu", "--epochs", "1",
                           "--max-train-events", "400", *flags], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    manifest = json.loads((out / "manifest.json").read_text())
    assert (manifest["family"], manifest["train"]["device"]) == (family_of(size).name, "cpu")
    model, _, _ = load_checkpoint(out)
    assert isinstance(model, type(FAMILIES[family_of(size).name].build(ml100k.schema, manifest["config"])))
    assert all(p.device.type == "cpu" for p in model.parameters())
    # The sequence family fits its score stack on valid and says so, unless told not to; the other family has none.
    sequence = family_of(size).name == "sequence" and "--no-stack" not in flags
    assert manifest["train"]["stack_on_valid"] == ("--no-stack" not in flags)
    assert (manifest["stack"] is not None) == sequence
    assert ("score stack" in done.stdout) == sequence, done.stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="a machine with CUDA accepts --device cuda")
def test_cuda_is_refused_where_there_is_none(ml100k: PreparedDataset, tiny_teacher: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no CUDA"):
        resolve_device("cuda")
    for command in (["teacher", "train", "--data", str(ml100k.directory), "--out", str(tmp_path / "t"),
                     "--size", "tiny", "--device", "cuda"],
                    ["teacher", "serve", "--checkpoint", str(tiny_teacher), "--device", "cuda"]):
        done = subprocess.run([RECDISTILL, *command], capture_output=True, text=True, timeout=120)
        assert done.returncode == 2, (command, done.stdout[-2000:], done.stderr[-2000:])
        assert "CUDA" in done.stdout + done.stderr
    assert not (tmp_path / "t").exists()


def test_sizes_devices_and_instance_kinds_come_from_one_table() -> None:
    assert family_of("medium").name == "attention"
    assert family_of("seq-xs").name == "sequence"
    assert architecture("seq-xs") is FAMILIES["sequence"].sizes["seq-xs"]
    with pytest.raises(DataError) as unknown:
        family_of("huge")
    assert "tiny" in str(unknown.value)
    assert "seq-xs" in str(unknown.value)
    with pytest.raises(DataError, match="auto, cpu, cuda"):
        resolve_device("tpu")
    assert (triton_kind("cpu"), triton_kind("cuda")) == ("KIND_CPU", "KIND_GPU")
