"""``python -m doublebackprop``: the same as the ``doublebackprop`` console script."""

import sys

from doublebackprop.cli import main

sys.exit(main())
