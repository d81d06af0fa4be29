"""The run folder: claimed by one run at a time, never silently reused.

A run may start in an empty (or missing) folder. A folder that already holds a run is refused
unless the caller says what to do with it: ``resume`` continues it (refused, before any file is
touched, when the config differs from the one it was started with, unless ``force``), and
``overwrite`` deletes its checkpoints, model and logs first. A lock file (``.lock``, holding
the owner's process id) keeps a second run out of a folder in use; a lock whose process is gone
is taken over.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from ar2diff.config import RunConfig
from ar2diff.errors import Ar2DiffError

LOCK = ".lock"
# What a run writes into its folder; --overwrite removes exactly these.
RUN_FILES = ("checkpoints", "model", "best", "best.json", "config.yaml", "history.json",
             "metrics.jsonl", "loss.png")
# Config fields that do not change what a run computes: resuming with other values is fine.
UNCHECKED = {("train", "progress"), ("train", "out_dir"), ("train", "device"),
             ("train", "eval_every"), ("train", "save_every"), ("train", "keep_last")}


def config_changes(saved: dict[str, Any], config: RunConfig) -> list[str]:
    """``section.key: old -> new`` for each field that differs from the saved config."""
    changes = []
    for section, fields in config.to_dict().items():
        before = saved.get(section) or {}
        for key, value in fields.items():
            if (section, key) in UNCHECKED:
                continue
            if key in before and before[key] != value:
                changes.append(f"{section}.{key}: {before[key]!r} -> {value!r}")
    return changes


def check_resume(out: Path, config: RunConfig, force: bool) -> None:
    """Refuse to resume ``out`` under a config other than the one it was started with."""
    path = out / "config.yaml"
    if not path.is_file() or force:
        return
    saved = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    changes = config_changes(saved, config)
    if changes:
        raise Ar2DiffError(
            f"--resume: the config differs from the one {out} was started with "
            f"({'; '.join(changes[:3])}{' …' if len(changes) > 3 else ''}); "
            "resume with the same settings, add --force to continue anyway, or use a new folder")


def holds_a_run(out: Path) -> bool:
    """Whether ``out`` has anything in it besides a lock."""
    return out.is_dir() and any(p.name != LOCK for p in out.iterdir())


def clear_run(out: Path) -> None:
    """Delete what an earlier run left in ``out`` (see :data:`RUN_FILES`)."""
    for name in RUN_FILES:
        path = out / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def acquire_lock(out: Path) -> Path:
    """Create ``out/.lock`` for this process; refuse when a live process holds it."""
    out.mkdir(parents=True, exist_ok=True)
    lock = out / LOCK
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                pid = int(lock.read_text(encoding="utf-8").strip() or 0)
            except (OSError, ValueError):
                pid = 0
            if pid and pid != os.getpid() and _pid_alive(pid):
                raise Ar2DiffError(
                    f"{out} is in use by another run (process {pid}, see {lock}); wait for it "
                    "to finish or choose another output folder") from None
            lock.unlink(missing_ok=True)  # left by a run that is gone
            continue
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(str(os.getpid()))
        return lock
    raise Ar2DiffError(f"could not lock {out}; remove {lock} if no run uses the folder")


@contextlib.contextmanager
def claim(config: RunConfig, resume: bool = False, overwrite: bool = False,
          force: bool = False, rank: int = 0) -> Iterator[Path]:
    """Check and lock the run folder for the run's whole life. Rank 0 alone checks, locks and
    clears it (the other ranks would race with its writes; a launcher such as torchrun stops
    them when rank 0 fails)."""
    if resume and overwrite:
        raise Ar2DiffError("--resume and --overwrite contradict each other; choose one")
    out = Path(config.train.out_dir)
    lock, created = None, not out.exists()
    if rank == 0:
        if out.exists() and not out.is_dir():
            raise Ar2DiffError(f"output folder {out} is a file; choose another train.out_dir")
        if holds_a_run(out) and not (resume or overwrite):
            raise Ar2DiffError(
                f"output folder {out} is not empty (an earlier run?); pass --resume to continue "
                "it, --overwrite to delete its checkpoints and start over, or choose a new folder")
        if resume:
            check_resume(out, config, force)
        try:
            lock = acquire_lock(out)
        except OSError as exc:
            raise Ar2DiffError(f"output folder {out} is not writable ({exc.strerror}); "
                               "choose another train.out_dir") from exc
        if overwrite:
            clear_run(out)
    try:
        yield out
    finally:
        if lock is not None:
            lock.unlink(missing_ok=True)
            if created and not any(out.iterdir()):
                out.rmdir()  # a run refused before any work leaves no folder behind
