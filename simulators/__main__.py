"""``python -m simulators`` = ``tidegate-sim``."""

import sys

from simulators.cli import main

sys.exit(main())
