"""``python -m feature_extraction ...`` (see :mod:`feature_extraction.cli`)."""

import sys

from .cli import main

sys.exit(main())
