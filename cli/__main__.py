"""``python -m cvscore.cli``: the same as the ``cvscore`` command."""

import sys

from .main import main

sys.exit(main())
