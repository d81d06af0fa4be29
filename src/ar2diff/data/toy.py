"""Built-in sequence tasks for smoke tests and the first demo: copy, reverse and sort digits.

Example ``i`` is a pure function of (seed, i), so any example can be regenerated and held-out
examples (drawn from a separate key space) never overlap training ones by construction of keys.
"""

from __future__ import annotations

import torch

from ar2diff.rng import example_generator

DIGITS = [str(d) for d in range(10)]
TASKS = ("copy", "reverse", "sort")


def toy_pair(task: str, index: int, seed: int, min_len: int, max_len: int) -> tuple[str, str]:
    """The (input, target) texts of example ``index``; inputs are space-separated digits."""
    if task not in TASKS:
        raise ValueError(f"unknown toy task {task!r}; choose one of {TASKS}")
    gen = example_generator(seed, index)
    length = int(torch.randint(min_len, max_len + 1, (), generator=gen))
    digits = torch.randint(0, 10, (length,), generator=gen).tolist()
    out = {"copy": digits, "reverse": digits[::-1], "sort": sorted(digits)}[task]
    return f"{task} : {' '.join(map(str, digits))}", " ".join(map(str, out))


def toy_vocabulary() -> list[str]:
    """Every word a toy example can contain."""
    return [*DIGITS, ":", *TASKS]
