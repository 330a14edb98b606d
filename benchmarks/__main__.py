"""`python -m benchmarks [--quick] [--data DIR]`: run every section and write BENCHMARKS.md + BENCHMARKS.json."""

from __future__ import annotations

import argparse
import contextlib
import logging
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from benchmarks import (
    channel_bench,
    samplelog_bench,
    scaleout_bench,
    scenarios_bench,
    student_bench,
    teacher_bench,
    worker_bench,
)
from benchmarks.results import Results
from recdistill.core.data.dataset import PreparedDataset
from recdistill.core.data.prepare import prepare_source
from recdistill.core.data.sources import shipped_schema
from recdistill.core.errors import DataError

ROOT = Path(__file__).parents[1]
logger = logging.getLogger("benchmarks")


@contextlib.contextmanager
def _timed(section: str) -> Iterator[None]:
    """Logs where a long run stands: each section's start and its wall time."""
    logger.info("section %s: started", section)
    started = time.perf_counter()
    yield
    logger.info("section %s: done in %.0f s", section, time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (smoke run)")
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "ml-100k")
    parser.add_argument("--out", type=Path, default=ROOT)
    parser.add_argument("--demo-report", type=Path, default=ROOT / "runs" / "demo" / "report.json",
                        help="the demo report whose streaming stage gives the freshness row")
    parser.add_argument("--only", choices=["student", "channel"],
                        help="one section (its rows alone in --out's BENCHMARKS.md; use another --out)")
    args = parser.parse_args()
    if args.only and args.out.resolve() == ROOT.resolve():
        parser.error("--only writes one section's rows: give it an --out of its own (the repository's "
                     "BENCHMARKS.md holds every section)")
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    args.out.mkdir(parents=True, exist_ok=True)  # found missing only after every section had run
    try:
        dataset = PreparedDataset(args.data)
    except DataError as exc:  # not prepared yet, or by an older version (its schema format)
        logging.getLogger(__name__).info("preparing MovieLens-100K into %s (%s)", args.data, exc)
        prepare_source("ml-100k", shipped_schema("ml-100k"), args.data)
        dataset = PreparedDataset(args.data)
    results = Results(command="make bench" + (" (--quick)" if args.quick else ""))
    if args.only:
        if args.only == "student":
            student_bench.run(results, dataset, args.quick)
        else:
            channel_bench.run(results, args.quick)
        results.write(args.out / "BENCHMARKS.md", args.out / "BENCHMARKS.json")
        return
    with _timed("student"):
        student_bench.run(results, dataset, args.quick)
    with _timed("student, other schema"), tempfile.TemporaryDirectory() as other:  # differently shaped schema
        prepare_source("ecommerce", shipped_schema("ecommerce"), Path(other))
        student_bench.run_other_schema(results, PreparedDataset(Path(other)), args.quick)
    with _timed("channel"):
        channel_bench.run(results, args.quick)
    for section in (teacher_bench, worker_bench, samplelog_bench):
        with _timed(section.__name__.removeprefix("benchmarks.")):
            section.run(results, dataset, args.quick)
    with _timed("scale-out"):
        scaleout_bench.run(results, dataset, args.quick, args.demo_report)
    with _timed("scenarios"):
        scenarios_bench.run(results, args.quick)  # last: its worker processes and fsyncs touch no other row
    results.write(args.out / "BENCHMARKS.md", args.out / "BENCHMARKS.json")
    print((args.out / "BENCHMARKS.md").read_text())  # noqa: T201


if __name__ == "__main__":
    main()
