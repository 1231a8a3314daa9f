"""A serial line as an asyncio byte channel, for the control protocol.

pyserial opens and configures the port (raw mode, baud rate, exclusive
lock) and leaves its descriptor non-blocking; we set ``VMIN=1`` so that an
idle line reads as "try again" rather than as 0 bytes; reads and writes then go
straight to the descriptor, woken by the event loop's reader/writer
callbacks, so the loop never blocks on the line. A hang-up (``EIO``, or a
read of 0 bytes -- what a pseudo-terminal gives once its other end closes)
is the end of the stream.

``--control-serial DEVICE[,BAUD]`` is parsed by :func:`parse_serial_spec`.
"""

from __future__ import annotations

import asyncio
import errno
import os
import termios
from typing import Final

import serial

from csembed.control.errors import ControlError

__all__ = ["DEFAULT_BAUDRATE", "SerialChannel", "parse_serial_spec"]

DEFAULT_BAUDRATE: Final = 115200
_READ_SIZE: Final = 4096


def parse_serial_spec(text: str) -> tuple[str, int]:
    """Split ``DEVICE[,BAUD]`` (e.g. ``/dev/ttyGS0,115200``); BAUD defaults to 115200."""
    device, sep, baud = text.rpartition(",")
    if not sep:
        device, baud = text, str(DEFAULT_BAUDRATE)
    if not device:
        raise ControlError(f"--control-serial {text!r}: no device given")
    if not baud.isdigit() or not 50 <= int(baud) <= 4_000_000:
        raise ControlError(f"--control-serial {text!r}: baud rate must be a number "
                           "from 50 to 4000000")
    return device, int(baud)


class SerialChannel:
    """An open serial port with async ``read``/``write``/``close``."""

    def __init__(self, port: serial.Serial) -> None:
        self._port = port
        self._fd = port.fileno()
        os.set_blocking(self._fd, False)

    @classmethod
    def open(cls, device: str, baudrate: int = DEFAULT_BAUDRATE) -> SerialChannel:
        """Open ``device`` raw at ``baudrate``, locked against a second opener."""
        try:
            port = serial.Serial(device, baudrate, timeout=0, exclusive=True)
        except (serial.SerialException, OSError, ValueError) as exc:
            raise ControlError(f"cannot open serial device {device}: {exc}") from None
        try:
            # pyserial leaves VMIN=0, with which an idle tty reads 0 bytes -- the
            # same as a hang-up. VMIN=1 on a non-blocking fd makes idle EAGAIN.
            attrs = termios.tcgetattr(port.fileno())
            attrs[6][termios.VMIN] = 1
            attrs[6][termios.VTIME] = 0
            termios.tcsetattr(port.fileno(), termios.TCSANOW, attrs)
        except termios.error as exc:
            port.close()
            raise ControlError(f"cannot configure serial device {device}: {exc}") from None
        return cls(port)

    async def _ready(self, add: str, remove: str) -> None:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()

        def wake() -> None:
            if not future.done():
                future.set_result(None)

        getattr(loop, add)(self._fd, wake)
        try:
            await future
        finally:
            getattr(loop, remove)(self._fd)

    async def read(self) -> bytes:
        """Bytes from the line; ``b""`` once it has hung up."""
        while True:
            try:
                return os.read(self._fd, _READ_SIZE)
            except BlockingIOError:
                pass
            except OSError as exc:
                if exc.errno == errno.EIO:
                    return b""
                raise
            await self._ready("add_reader", "remove_reader")

    async def write(self, data: bytes) -> None:
        """Write all of ``data``."""
        view = memoryview(data)
        while view:
            try:
                written = os.write(self._fd, view)
            except BlockingIOError:
                written = 0
            view = view[written:]
            if view:
                await self._ready("add_writer", "remove_writer")

    async def close(self) -> None:
        """Close the port."""
        self._port.close()
