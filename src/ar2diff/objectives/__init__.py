"""Objectives: how a text segment becomes an (input, target) example, and the AR, SUNDAE and
masked-diffusion losses."""
