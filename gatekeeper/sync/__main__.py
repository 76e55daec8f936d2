"""``python -m gatekeeper.sync --config PATH``: only the sync loop, until SIGTERM."""

import sys

from gatekeeper.sync.cloud import main

sys.exit(main())
