"""Errors a user can act on: the CLI prints them as one line, without a traceback."""


class Ar2DiffError(Exception):
    """A problem with the user's input (file, config field, value) and what to do about it."""
