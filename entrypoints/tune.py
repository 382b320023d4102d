"""MLproject entry point ``tune``: thin wrapper over ``precipgen tune``."""

import sys

from precipgen.cli import main

if __name__ == "__main__":
    sys.exit(main(["tune", *sys.argv[1:]]))
