"""Where a result came from: the package version and the source commit."""

from __future__ import annotations

import subprocess
from pathlib import Path


def version() -> str:
    from ar2diff import __version__

    return __version__


def git_commit() -> str | None:
    """The commit of the source tree, when it is a git checkout."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent,
                             capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None
