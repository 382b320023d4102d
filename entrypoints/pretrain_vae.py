"""MLproject entry point ``pretrain_vae``: thin wrapper over ``precipgen pretrain_vae``."""

import sys

from precipgen.cli import main

if __name__ == "__main__":
    sys.exit(main(["pretrain_vae", *sys.argv[1:]]))
