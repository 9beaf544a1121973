"""``python -m cirbench ...`` (and ``torchrun ... -m cirbench run ...``): the ``cirbench`` command."""

import sys

from cirbench.cli import main

sys.exit(main())
