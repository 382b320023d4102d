"""MLproject entry point ``sample``: thin wrapper over ``precipgen sample``."""

import sys

from precipgen.cli import main

if __name__ == "__main__":
    sys.exit(main(["sample", *sys.argv[1:]]))
