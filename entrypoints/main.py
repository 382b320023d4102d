"""MLproject entry point ``main``: thin wrapper over ``precipgen main``."""

import sys

from precipgen.cli import main

if __name__ == "__main__":
    sys.exit(main(["main", *sys.argv[1:]]))
