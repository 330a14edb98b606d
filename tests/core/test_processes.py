"""Process helpers: background work at a lower CPU priority than serving."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from recdistill.core.processes import child_process

PROBE = textwrap.dedent("""
    import os, threading
    from recdistill.core.processes import lower_priority
    release = threading.Event()
    before = threading.Thread(target=release.wait)
    before.start()
    base = os.getpriority(os.PRIO_PROCESS, 0)
    lower_priority(5)
    seen = {}
    after = threading.Thread(target=lambda: seen.update(after=os.getpriority(os.PRIO_PROCESS, 0)))
    after.start(); after.join()
    print(os.getpriority(os.PRIO_PROCESS, before.native_id) - base, seen["after"] - base,
          os.getpriority(os.PRIO_PROCESS, 0) - base)
    release.set()
""")


@pytest.mark.skipif(sys.platform != "linux", reason="per-thread nice values are a Linux attribute")
def test_lower_priority_reaches_every_thread_and_later_ones() -> None:
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["5", "5", "5"]


def test_a_child_process_runs_niced() -> None:
    command = [sys.executable, "-c", "import os, time; print(os.nice(0), flush=True); time.sleep(30)"]
    with child_process(command, lambda: True, "probe", niceness=7) as process:
        own = subprocess.run([sys.executable, "-c", "import os; print(os.nice(0))"], capture_output=True,
                             text=True, check=True).stdout
        assert int(subprocess.run(["ps", "-o", "ni=", "-p", str(process.pid)], capture_output=True, text=True,
                                  check=True).stdout) == min(19, int(own) + 7)
