"""MLproject entry point ``prepare``: thin wrapper over ``precipgen prepare``."""

import sys

from precipgen.cli import main

if __name__ == "__main__":
    sys.exit(main(["prepare", *sys.argv[1:]]))
