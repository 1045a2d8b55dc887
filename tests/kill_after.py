"""Run the telecli command line and SIGKILL the process right after its N-th results checkpoint, so a test
can interrupt a job at a known point and check that it resumes:

    python tests/kill_after.py N telescope RUN --out FILE ...
"""

import os
import signal
import sys

from telecli.store import results

limit, seen = int(sys.argv[1]), 0
checkpoint = results.ResultsWriter.checkpoint


def checkpoint_then_kill(self, step, state):
    global seen
    checkpoint(self, step, state)
    seen += 1
    if seen >= limit:
        os.kill(os.getpid(), signal.SIGKILL)


results.ResultsWriter.checkpoint = checkpoint_then_kill
sys.argv = ["telecli", *sys.argv[2:]]

from telecli.cli import main  # noqa: E402

main()
