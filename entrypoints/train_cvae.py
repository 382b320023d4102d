"""MLproject entry point ``train_cvae``: thin wrapper over ``precipgen train_cvae``."""

import sys

from precipgen.cli import main

if __name__ == "__main__":
    sys.exit(main(["train_cvae", *sys.argv[1:]]))
