"""`python -m orbitbench.sweep._child PARENT_PID fit ...`: `orbitbench fit` that dies with its sweep.

Linux's PR_SET_PDEATHSIG makes the kernel SIGKILL this process when the sweep process that
started it dies, however it died (SIGKILL included), so no orphan fit keeps writing into a cell
folder. Then it runs `python -m orbitbench` with the remaining arguments, so Lightning's DDP
launcher re-executes a plain `orbitbench fit` command line for its other ranks.
"""

from __future__ import annotations

import ctypes
import os
import runpy
import signal
import sys

PR_SET_PDEATHSIG = 1


def main() -> None:
    parent = int(sys.argv[1])
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the sweep died before the request took effect
        os._exit(128 + signal.SIGKILL)
    sys.argv = [sys.argv[0], *sys.argv[2:]]
    runpy.run_module("orbitbench", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
