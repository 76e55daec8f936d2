"""gatekeeper: unattended parking-lane controller."""

__version__ = "0.1.0"
