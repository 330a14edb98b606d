"""A bounded soak run: a student server under a fixed request rate for a fixed time, with swaps
(OperatorUser); reports errors and the server's RSS over time. Stops by itself.
`python -m benchmarks.soak [--minutes 5] [--users 10] [--rate-per-user 10] [--out runs/soak]`."""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

from benchmarks.student_bench import ROOT, TOKEN, _registry
from recdistill.core.data.dataset import PreparedDataset
from student_server import student_process


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--users", type=int, default=10)
    parser.add_argument("--rate-per-user", type=float, default=10.0)
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "ml-100k")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "soak")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    bin_dir = Path(sys.executable).parent
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        _registry(PreparedDataset(args.data), tmp / "registry")
        env = {"RECDISTILL_ADMIN_TOKEN": TOKEN, "RECDISTILL_DATA": str(args.data),
               "RECDISTILL_SOAK_RATE": str(args.rate_per_user)}
        with student_process(tmp / "registry", tmp / "samples", "--sampling-rate", "0.1", token=TOKEN,
                             env=env) as (endpoints, server):
            rss: list[tuple[float, float]] = []
            stop = threading.Event()

            def sample() -> None:
                started = time.monotonic()
                while not stop.wait(5.0):
                    rss.append((time.monotonic() - started, psutil.Process(server.pid).memory_info().rss / 2**20))

            sampler = threading.Thread(target=sample)
            sampler.start()
            try:
                subprocess.run(
                    [
                        str(bin_dir / "locust"),
                        "-f",
                        str(ROOT / "loadtests"),
                        "--headless",
                        "-u",
                        str(args.users + 1),
                        "-r",
                        str(args.users + 1),
                        "-t",
                        f"{int(args.minutes * 60)}s",
                        "--host",
                        endpoints.http_url,
                        "--csv",
                        str(args.out / "locust"),
                        "--only-summary",
                        "SoakHttpUser",
                        "OperatorUser",
                    ],
                    env=__import__("os").environ | env,
                    check=False,
                    cwd=ROOT,
                    timeout=args.minutes * 60 + 120,
                )
            finally:
                stop.set()
                sampler.join()
    with (args.out / "locust_stats.csv").open() as handle:
        rows = {row["Name"]: row for row in csv.DictReader(handle)}
    total = rows["Aggregated"]
    report = {
        "minutes": args.minutes,
        "users": args.users,
        "target_rate": args.users * args.rate_per_user,
        "requests": int(total["Request Count"]),
        "failures": int(total["Failure Count"]),
        "rank_p50_ms": float(rows["/v1/rank"]["50%"]),
        "rank_p99_ms": float(rows["/v1/rank"]["99%"]),
        "rss_mib_first": rss[0][1] if rss else None,
        "rss_mib_last": rss[-1][1] if rss else None,
        "rss_mib_growth": (rss[-1][1] - rss[0][1]) if len(rss) > 1 else None,
        "rss_mib_series": rss,
    }
    (args.out / "soak.json").write_text(json.dumps(report, indent=2))
    print(json.dumps({k: v for k, v in report.items() if k != "rss_mib_series"}, indent=1))  # noqa: T201


if __name__ == "__main__":
    main()
