"""``python -m daemon.keeper --state-dir DIR``: the keeper, without the ``stablehand`` front."""

import sys

from .main import main

sys.exit(main())
