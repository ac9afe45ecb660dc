"""`python -m conductor_core.eval FILE`: see cli.py."""

import sys

from .cli import main

sys.exit(main())
