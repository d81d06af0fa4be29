"""Objectives: how a text segment becomes an (input, target) example, and the AR / SUNDAE losses."""
