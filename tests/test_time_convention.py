"""The one time convention: no sans-I/O machine is handed a clock; ``now`` comes in.

csembed/protocol/__init__.py states the rule. This checks its mechanical half
over the protocol layer's packages: no function, method or constructor
defined there takes a ``clock`` parameter (a machine that reads time itself
would need one, since the layer may not import ``time``, which
tools/check_layers.py enforces).
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from collections.abc import Iterator
from typing import Any

SANS_IO_PACKAGES = ("protocol", "security", "discovery", "nat", "transport", "web", "control")


def _callables() -> Iterator[tuple[str, Any]]:
    for package in SANS_IO_PACKAGES:
        path = importlib.import_module(f"csembed.{package}").__path__
        module_names = [f"csembed.{package}"] + [
            f"csembed.{package}.{info.name}" for info in pkgutil.iter_modules(path)]
        for name in module_names:
            module = importlib.import_module(name)
            for attr, value in vars(module).items():
                if getattr(value, "__module__", None) != name:
                    continue
                if inspect.isfunction(value):
                    yield f"{name}.{attr}", value
                elif inspect.isclass(value):
                    for member, method in vars(value).items():
                        function = getattr(method, "__func__", method)
                        if inspect.isfunction(function):
                            yield f"{name}.{attr}.{member}", function


def test_no_sans_io_callable_takes_a_clock() -> None:
    found = list(_callables())
    assert len(found) > 200  # the walk reached the layer
    offenders = [name for name, function in found
                 if "clock" in inspect.signature(function).parameters]
    assert offenders == []


def test_the_machines_take_now_with_their_input() -> None:
    from csembed.protocol.core import PeerConnection
    from csembed.security.handshake import SecureSession
    for machine in (PeerConnection, SecureSession):
        assert "now" in inspect.signature(machine.receive_data).parameters
        assert "now" in inspect.signature(machine.buffer_updated).parameters
        assert "now" in inspect.signature(machine.handle_timer).parameters
        assert "now" in inspect.signature(machine.client).parameters
