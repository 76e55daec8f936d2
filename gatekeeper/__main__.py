"""``python -m gatekeeper``: the ``gatekeeper`` command."""

import sys

from gatekeeper.cli import main

sys.exit(main())
