"""Losses of the AR and diffusion objectives (on already-corrupted targets)."""
