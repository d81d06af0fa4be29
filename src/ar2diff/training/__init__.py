"""Training: the one loop, multi-process helpers, and the assembly of a run from its config."""
