"""MLproject entry point ``finetune_crps``: thin wrapper over ``precipgen finetune_crps``."""

import sys

from precipgen.cli import main

if __name__ == "__main__":
    sys.exit(main(["finetune_crps", *sys.argv[1:]]))
