"""The daemon's side of the control protocol: every command of the table.

Theory of operation
-------------------
:class:`DaemonControl` implements :class:`~csembed.control.handler.ControlHandler`
on a running :class:`~csembed.runtime.daemon.Daemon`, served by a plain
:class:`~csembed.control.server.ControlServer`: the server has already
checked each request against the command table
(:mod:`csembed.control.commands`, which also holds the optional arguments
``max_uses``/``expires`` of ``create_access_code`` and the commands
``rescan`` and ``read_file``), so each method only does the work and returns
the value the table turns into the reply.

Errors follow control.md: ``invalid_argument`` for a bad argument, a
command-specific code or an errno name from the daemon, ``internal_error``
(logged) for a bug; the connection keeps serving after any of them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from csembed.control.errors import ControlRequestError
from csembed.control.handler import (
    DEFAULT_CODE_LIFETIME,
    DEFAULT_CODE_USES,
    MAX_READ,
    AccessMode,
    ControlHandler,
    DaemonStatus,
    FileChunk,
    ShareInfo,
)

if TYPE_CHECKING:
    from csembed.runtime.daemon import Daemon

__all__ = ["DaemonControl"]


class DaemonControl(ControlHandler):
    """Control commands carried out on a :class:`Daemon`."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon

    async def stop(self) -> None:
        asyncio.get_running_loop().call_soon(self.daemon.request_stop)

    async def pause(self) -> None:
        self.daemon.pause()

    async def resume(self) -> None:
        self.daemon.resume()

    async def status(self) -> DaemonStatus:
        daemon = self.daemon
        return DaemonStatus(
            paused=daemon.paused,
            tracking=daemon.finder.tracker is not None and daemon.finder.tracker.connected,
            nat_punctured=False,
            upload_rate=int(daemon.limits.upload.throughput()),
            download_rate=int(daemon.limits.download.throughput()),
            extra=daemon.status())

    async def create_share(self, path: str) -> Mapping[str, Any]:  # type: ignore[override]
        return await self.daemon.create_share(path)

    async def list_shares(self) -> Sequence[ShareInfo]:
        daemon = self.daemon
        out = []
        for share in daemon.shares.values():
            info = daemon.share_status(share)
            out.append(ShareInfo(info.pop("path"), info.pop("status"), info))
        for attach in daemon.pending.values():
            info = daemon.attach_status(attach)
            out.append(ShareInfo(info.pop("path"), info.pop("status"), info))
        for share_id in daemon.unloadable:
            info = daemon.unloadable_status(share_id)
            out.append(ShareInfo(info.pop("path"), info.pop("status"), info))
        return out

    async def add_share(self, code: str, path: str) -> Mapping[str, Any]:  # type: ignore[override]
        return await self.daemon.add_share(code, path)

    async def remove_share(self, path: str) -> None:
        await self.daemon.remove_share(path)

    async def create_access_code(self, path: str, mode: AccessMode, *,
                                 max_uses: int | None = DEFAULT_CODE_USES,
                                 expires: float | None = DEFAULT_CODE_LIFETIME) -> str:
        return await self.daemon.create_access_code(path, mode.value, max_uses=max_uses,
                                                    lifetime=expires)

    async def get_config(self) -> Mapping[str, Any]:
        return dict(self.daemon.config)

    async def set_config(self, config: Mapping[str, Any]) -> None:
        await self.daemon.set_config(config)

    async def get_config_value(self, key: str) -> Any:
        if key not in self.daemon.config:
            raise ControlRequestError("no_such_key", f"no configuration key {key[:80]!r}; "
                                      "known keys: " + ", ".join(self.daemon.config))
        return self.daemon.config[key]

    async def set_config_value(self, key: str, value: Any) -> None:
        await self.daemon.set_config({key: value})

    async def list_peers(self) -> Sequence[Mapping[str, Any]]:
        return self.daemon.peers()

    async def list_transfers(self) -> Sequence[Mapping[str, Any]]:
        return self.daemon.transfers()

    async def rescan(self, path: str | None = None) -> int:
        return self.daemon.rescan(path)

    async def read_file(self, path: str, file: str, offset: int = 0,
                        count: int = MAX_READ) -> FileChunk:
        got = await self.daemon.read_file(path, file, offset, count)
        return FileChunk(size=got["size"], offset=got["offset"], data=got["data"],
                         eof=got["eof"])

    async def versions(self, path: str) -> Mapping[str, Any]:
        from csembed.runtime.share_versions import list_versions
        return list_versions(self.daemon, path)

    async def restore(self, path: str, version: int | None = None, at: float | None = None,
                      to: str | None = None) -> Mapping[str, Any]:
        from csembed.runtime.share_versions import restore_version
        return await restore_version(self.daemon, path, version=version, at=at, to=to)
