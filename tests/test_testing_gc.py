"""The test clock's look at the threads, while the garbage collector frees thread-locals.

Before Python 3.12, ``sys._current_frames()`` could start a garbage collection
while holding the interpreter's lock on its threads; one that freed a
``threading.local`` (a store left in a reference cycle holds one) deadlocked
the whole process, the GIL held: pytest-timeout never fired (seen once in CI,
stuck for twenty minutes). A deadlock stops every thread of the process, the
test's too, so the harness runs in a child process here, which a watchdog of
C (faulthandler) ends with every thread's stack if it hangs.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

CHILD = textwrap.dedent(
    """
    import faulthandler, gc, sys, threading, time
    from runtime.testing import Harness

    faulthandler.dump_traceback_later(30, exit=True)

    class Holder:
        def __init__(self):
            self.local = threading.local()
            self.me = self  # a cycle: only a collection frees it, and its local with it

    def fresh(i):  # a new frame each call, whose frame object the clock's look makes
        return Holder() if i % 3 == 0 else [i]

    stop = threading.Event()

    def produce():
        i = 0
        while not stop.is_set():
            fresh(i)
            i += 1

    with Harness():
        producers = [threading.Thread(target=produce) for _ in range(2)]
        for thread in producers:
            thread.start()
        # Collections as often as a few allocations: many of them start inside the look.
        for threshold in (2, 3, 5, 8):
            gc.set_threshold(threshold)
            time.sleep(0.5)
        gc.set_threshold(700)
        stop.set()
        for thread in producers:
            thread.join()
    print("done")
    """
)


def test_the_test_clock_keeps_going_while_collections_free_thread_locals(tmp_path: Path) -> None:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    done = subprocess.run(
        [sys.executable, str(script)],
        cwd=Path(__file__).resolve().parent.parent,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert (done.returncode, done.stdout.strip()) == (0, "done"), done.stderr[-4000:]
