"""Benchmark rows and the BENCHMARKS.md / BENCHMARKS.json writer."""

from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np


@dataclass
class Row:
    section: str
    name: str
    value: float
    unit: str
    reference: str = ""
    reference_value: float | None = None
    ratio: float | None = None  # value / reference_value, or as the note says
    note: str = ""
    command: str = ""


@dataclass
class Results:
    command: str
    rows: list[Row] = field(default_factory=list)
    started: float = field(default_factory=time.time)

    def add(self, row: Row) -> None:
        if row.ratio is None and row.reference_value:
            row.ratio = row.value / row.reference_value
        self.rows.append(row)

    def write(self, markdown: Path, json_path: Path) -> None:
        machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
        data = {"command": self.command, "machine": machine, "started_unix": int(self.started),
                "seconds": round(time.time() - self.started, 1), "rows": [asdict(r) for r in self.rows]}
        json_path.write_text(json.dumps(data, indent=2))
        lines = [
            "# Benchmarks", "",
            f"Produced by `{self.command}` on {machine}, in one run of {data['seconds']} s "
            f"({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(self.started))}). Every ratio compares two "
            "figures measured side by side in that run. The machine is shared: read trends, not digits.", "",
        ]
        for section in dict.fromkeys(r.section for r in self.rows):
            lines += [f"## {section}", "", "| measurement | value | reference | ratio | note | command |",
                      "|---|---|---|---|---|---|"]
            for r in (r for r in self.rows if r.section == section):
                reference = f"{r.reference}: {fmt(r.reference_value)} {r.unit}" if r.reference else ""
                ratio = f"{r.ratio:.2f}x" if r.ratio is not None else ""
                cells = [r.name, f"{fmt(r.value)} {r.unit}", reference, ratio, r.note, f"`{r.command}`"]
                lines.append("| " + " | ".join(cells) + " |")
            lines.append("")
        markdown.write_text("\n".join(lines))


def fmt(value: float | None) -> str:
    if value is None:
        return ""
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


def percentiles_ms(seconds: list[float]) -> tuple[float, float]:
    values = np.asarray(seconds) * 1e3
    return float(np.percentile(values, 50)), float(np.percentile(values, 99))
