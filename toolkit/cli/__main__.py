"""``python -m toolkit.cli``: the same as ``rtk``."""

import sys

from toolkit.cli.main import main

sys.exit(main())
