"""``python -m runtime``: the ``callboard`` command."""

import sys

from runtime.cli import main

sys.exit(main())
