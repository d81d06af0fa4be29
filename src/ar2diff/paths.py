"""Where ar2diff reads shared data and keeps its cache.

The shared data folder sits beside the repository checkout (``<repo>/../shared/data``); the
environment variable ``AR2DIFF_DATA`` overrides that location. Downloads, converted models,
tokenised corpora and trained tokenizers are cached under :func:`default_cache_dir`.
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
        repo_root = Path(__file__).resolve().parents[2]
        candidate = repo_root.parent / "shared" / "data"
    return candidate if candidate.is_dir() else None


def default_cache_dir() -> Path:
    """``$AR2DIFF_CACHE``, else ``$XDG_CACHE_HOME/ar2diff``, else ``~/.cache/ar2diff``."""
    if override := os.environ.get("AR2DIFF_CACHE"):
        return Path(override).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "ar2diff"
