"""``python -m runtime``: the ``callboard`` command."""

import sys

from runtime._cli import main

sys.exit(main())
