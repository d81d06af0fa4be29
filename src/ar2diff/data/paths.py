"""Where the offline copy of the public data sets lives.

The shared data folder sits beside the repository checkout (``<repo>/../shared/data``); the
environment variable ``AR2DIFF_DATA`` overrides that location.
"""

from __future__ import annotations

import os
from pathlib import Path

DATA_ENV_VAR = "AR2DIFF_DATA"


def shared_data_dir() -> Path | None:
    """Return the shared data folder, or None when it does not exist.

    ``$AR2DIFF_DATA`` wins when set (and None is returned if it names no folder); otherwise
    ``shared/data`` beside the repository root is used.
    """
    override = os.environ.get(DATA_ENV_VAR)
    if override:
        candidate = Path(override).expanduser()
    else:
        repo_root = Path(__file__).resolve().parents[3]
        candidate = repo_root.parent / "shared" / "data"
    return candidate if candidate.is_dir() else None
