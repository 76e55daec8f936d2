"""Choosing the gpiozero pin factory named in ``[hardware] pin_factory``.

The hardware libraries (lgpio, RPi.GPIO) only exist on a Pi, so they are imported
lazily: a laptop running ``--sim`` or the tests never needs them, and a Pi that
lacks one gets an error naming the package to install instead of a bare
ImportError deep inside gpiozero.
"""

from __future__ import annotations

import logging
from typing import Literal, get_args

from gpiozero import Factory

log = logging.getLogger(__name__)

PinFactoryName = Literal["mock", "lgpio", "rpigpio", "native"]
PIN_FACTORY_NAMES: tuple[str, ...] = get_args(PinFactoryName)

#: What to install when a factory's library is missing (Raspberry Pi OS package, pip package).
_INSTALL_HINTS = {
    "lgpio": "apt install python3-lgpio (or pip install lgpio in the venv)",
    "rpigpio": "apt install python3-rpi.gpio (or pip install RPi.GPIO in the venv)",
    "native": "nothing to install, but it only works on a Raspberry Pi",
}


class PinFactoryError(RuntimeError):
    """The configured pin factory cannot be used on this machine; the message says why and what to do."""


def make_pin_factory(name: PinFactoryName | str) -> Factory:
    """A fresh gpiozero pin factory: ``mock`` everywhere, the others on a Raspberry Pi.

    The factory is passed explicitly to every device (``pin_factory=``) rather than
    set as gpiozero's global default, so tests and several daemons in one process
    never share pins by accident.
    """
    if name not in PIN_FACTORY_NAMES:
        raise ValueError(f"unknown pin factory {name!r}; choose one of {', '.join(PIN_FACTORY_NAMES)}")
    if name == "mock":
        from gpiozero.pins.mock import MockFactory

        return MockFactory()
    try:
        if name == "lgpio":
            from gpiozero.pins.lgpio import LGPIOFactory

            factory: Factory = LGPIOFactory()
        elif name == "rpigpio":
            from gpiozero.pins.rpigpio import RPiGPIOFactory

            factory = RPiGPIOFactory()
        else:
            from gpiozero.pins.native import NativeFactory

            factory = NativeFactory()
    except ImportError as exc:
        raise PinFactoryError(
            f"pin factory {name!r} needs a library that is not installed ({exc}); "
            f"install it: {_INSTALL_HINTS[name]}; or set [hardware] pin_factory = \"mock\" to simulate"
        ) from exc
    except Exception as exc:  # gpiozero raises PinUnknownPi, OSError (no /dev/gpiochip*, permissions), ...
        raise PinFactoryError(
            f"pin factory {name!r} cannot start on this machine: {exc} "
            "(is this a Raspberry Pi, and is the user in the 'gpio' group?)"
        ) from exc
    log.info("pin factory %s ready", name)
    return factory
