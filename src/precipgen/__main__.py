"""``python -m precipgen <step> ...`` (what the pipeline runs for each step)."""

import sys

from precipgen.cli import main

sys.exit(main())
