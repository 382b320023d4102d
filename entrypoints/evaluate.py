"""MLproject entry point ``evaluate``: thin wrapper over ``precipgen evaluate``."""

import sys

from precipgen.cli import main

if __name__ == "__main__":
    sys.exit(main(["evaluate", *sys.argv[1:]]))
