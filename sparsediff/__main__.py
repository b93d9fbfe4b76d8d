"""``python -m sparsediff``: the ``sparsediff`` command line."""

import sys

from .cli import main

sys.exit(main())
