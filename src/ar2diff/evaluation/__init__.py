"""Evaluation: metrics, the code-task harness and sandbox, scoring, and the evaluation run."""
