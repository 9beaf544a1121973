"""``python -m cirbench.cli ...``: the ``cirbench`` command (as ``python -m cirbench``)."""

import sys

from cirbench.cli import main

sys.exit(main())
