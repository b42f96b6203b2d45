"""Where a benchmark's numbers came from: the code's commit and the command as run.

Benchmarks run as scripts (`python benchmarks/NAME.py`), so their folder is on `sys.path` and
they import this module as `provenance`.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from functools import partial


def git_commit() -> str:
    """The checkout's short commit, '+ local changes' when the tree differs; or 'unknown'."""
    try:
        run = partial(subprocess.run, capture_output=True, text=True, check=True, timeout=30)
        commit = run(["git", "rev-parse", "--short", "HEAD"]).stdout.strip()
        dirty = run(["git", "status", "--porcelain", "--", "anomaly", "generative"]).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return commit + (" + local changes in anomaly/ or generative/" if dirty.strip() else "")


def command_line() -> str:
    """The command as run, relative to the repository root (no machine paths)."""
    exe = sys.executable
    exe = os.path.relpath(exe) if exe.startswith(os.getcwd()) else exe
    script = sys.argv[0]
    script = os.path.relpath(script) if os.path.isabs(script) else script
    return shlex.join([exe, script, *sys.argv[1:]])
