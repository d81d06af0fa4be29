"""Packaging: dependency ranges in pyproject.toml, CI's exact versions in constraints.txt."""

from __future__ import annotations

from pathlib import Path

import pytest


def test_dependencies_are_ranges_with_ci_versions_in_constraints():
    """pyproject.toml gives ranges (ar2diff installs beside a research environment's torch);
    constraints.txt pins each to the exact version CI installs, inside its range."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    from packaging.requirements import Requirement

    root = Path(__file__).resolve().parents[1]
    project = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    reqs = [Requirement(r) for r in project["dependencies"]]
    reqs += [Requirement(r) for extra in project["optional-dependencies"].values() for r in extra]
    pins = {}
    for line in (root / "constraints.txt").read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            pin = Requirement(line)
            pins[pin.name.lower()] = next(iter(pin.specifier)).version
    for req in reqs:
        assert not any(s.operator == "==" for s in req.specifier), f"{req}: give a range"
        assert req.name.lower() in pins, f"{req.name}: pin CI's version in constraints.txt"
        assert req.specifier.contains(pins[req.name.lower()]), f"{req.name}: pin outside range"
    assert "-c constraints.txt" in (root / ".ci" / "run").read_text(encoding="utf-8")
