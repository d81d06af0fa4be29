"""Decode benchmark as a script: same as ``ar2diff bench decode`` (see --help)."""

import sys

from ar2diff.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "decode", *sys.argv[1:]]))
