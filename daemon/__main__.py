"""``python -m daemon`` is the ``stablehand`` command."""

import sys

from .cli import main

sys.exit(main())
