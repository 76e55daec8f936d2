"""``python -m gatekeeper.cli``: the ``gatekeeper`` command."""

import sys

from gatekeeper.cli import main

sys.exit(main())
