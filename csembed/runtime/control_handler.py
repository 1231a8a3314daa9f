"""The daemon's side of the control protocol: every command of the table.

Theory of operation
-------------------
:class:`DaemonControl` implements :class:`~csembed.control.handler.ControlHandler`
on a running :class:`~csembed.runtime.daemon.Daemon`, served by a plain
:class:`~csembed.runtime.control_server.ControlServer`: the server has already
checked each request against the command table
(:mod:`csembed.control.commands`), so each method only does the work and
returns the value the table turns into the reply.

This is the one place where the runtime's own errors
(:mod:`csembed.runtime.errors`) become control error codes, by class, in
:data:`ERROR_CODES`; an ``OSError`` keeps its errno name (the server's rule)
and anything else is an ``internal_error`` (logged). The connection keeps
serving after any of them.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, ParamSpec, TypeVar

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
    ShareMode,
)
from csembed.runtime import errors

if TYPE_CHECKING:
    from csembed.runtime.daemon import Daemon

__all__ = ["ERROR_CODES", "DaemonControl"]

ERROR_CODES: Final[Mapping[type[errors.DaemonError], str]] = {
    errors.NoSuchShare: "no_such_share",
    errors.ShareExists: "share_exists",
    errors.ShareOverlaps: "share_overlaps",
    errors.FolderNotEmpty: "folder_not_empty",
    errors.BadAccessCode: "bad_access_code",
    errors.ModeNotSupported: "not_supported",
    errors.NotPermitted: "not_permitted",
    errors.NoSuchCode: "no_such_code",
    errors.NoSuchPeer: "no_such_peer",
    errors.NotAvailable: "not_available",
    errors.BadSetting: "invalid_argument",
    errors.NoSuchSetting: "no_such_key",
}
"""Runtime error class -> control error code (a subclass takes its nearest listed base)."""

P = ParamSpec("P")
R = TypeVar("R")


def _code_for(exc: errors.DaemonError) -> str:
    for cls in type(exc).__mro__:
        code = ERROR_CODES.get(cls)  # type: ignore[call-overload]
        if code is not None:
            return code
    return "failed"


def _translated(method: Callable[P, Coroutine[Any, Any, R]]
                ) -> Callable[P, Coroutine[Any, Any, R]]:
    @functools.wraps(method)
    async def run(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await method(*args, **kwargs)
        except errors.DaemonError as exc:
            raise ControlRequestError(_code_for(exc), str(exc)) from None
    return run


def _info(view: dict[str, Any]) -> ShareInfo:
    rest = dict(view)
    return ShareInfo(rest.pop("path"), rest.pop("status"), rest)


class DaemonControl(ControlHandler):
    """Control commands carried out on a :class:`Daemon`."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon

    async def stop(self) -> None:
        asyncio.get_running_loop().call_soon(self.daemon.request_stop)

    @_translated
    async def pause(self, path: str | None = None) -> Mapping[str, Any] | None:
        if path is None:
            self.daemon.pause()
            return None
        from csembed.runtime.share_controls import pause_share
        return pause_share(self.daemon, path)

    @_translated
    async def resume(self, path: str | None = None) -> Mapping[str, Any] | None:
        if path is None:
            self.daemon.resume()
            return None
        from csembed.runtime.share_controls import resume_share
        return resume_share(self.daemon, path)

    @_translated
    async def override_changes(self, path: str) -> Mapping[str, Any]:
        from csembed.runtime.share_controls import override_share
        return override_share(self.daemon, path)

    @_translated
    async def revert_changes(self, path: str) -> Mapping[str, Any]:
        from csembed.runtime.share_controls import revert_share
        return revert_share(self.daemon, path)

    @_translated
    async def set_share_mode(self, path: str, mode: ShareMode) -> Mapping[str, Any]:
        from csembed.directory.share_policy import SyncMode
        from csembed.runtime.share_controls import set_share_mode
        return set_share_mode(self.daemon, path, SyncMode(mode.value))

    def _status(self, extra: Mapping[str, Any]) -> DaemonStatus:
        daemon = self.daemon
        return DaemonStatus(
            paused=daemon.paused, tracking=daemon.tracking, nat_punctured=False,
            upload_rate=int(daemon.limits.upload.throughput()),
            download_rate=int(daemon.limits.download.throughput()), extra=extra)

    async def status(self) -> DaemonStatus:
        return self._status(self.daemon.summary())

    async def status_detail(self) -> DaemonStatus:
        return self._status(self.daemon.status())

    @_translated
    async def create_share(self, path: str,  # type: ignore[override]
                           sync_mode: ShareMode | None = None) -> Mapping[str, Any]:
        reply = await self.daemon.create_share(path)
        if sync_mode is not None and sync_mode is not ShareMode.SEND_RECEIVE:
            # No await between the two: the new share's runtime has not run yet,
            # so its first scan already follows the mode.
            from csembed.directory.share_policy import SyncMode
            from csembed.runtime.share_controls import set_share_mode
            reply = {**reply, **set_share_mode(self.daemon, path, SyncMode(sync_mode.value))}
        return reply

    async def list_shares(self) -> Sequence[ShareInfo]:
        return [_info(view) for view in self.daemon.share_views()]

    @_translated
    async def add_share(self, code: str, path: str,  # type: ignore[override]
                        merge: bool = True,
                        sync_mode: ShareMode = ShareMode.SEND_RECEIVE) -> Mapping[str, Any]:
        return await self.daemon.add_share(code, path, merge=merge, sync_mode=sync_mode.value)

    @_translated
    async def remove_share(self, path: str) -> None:
        await self.daemon.remove_share(path)

    @_translated
    async def create_access_code(self, path: str, mode: AccessMode, *,
                                 max_uses: int | None = DEFAULT_CODE_USES,
                                 expires: float | None = DEFAULT_CODE_LIFETIME) -> str:
        return await self.daemon.create_access_code(path, mode.value, max_uses=max_uses,
                                                    lifetime=expires)

    async def list_codes(self) -> Sequence[Mapping[str, Any]]:
        return self.daemon.list_codes()

    @_translated
    async def revoke_code(self, code: str) -> Mapping[str, Any]:
        return self.daemon.revoke_code(code)

    async def get_config(self) -> Mapping[str, Any]:
        return dict(self.daemon.config)

    async def config_sources(self) -> Sequence[Mapping[str, Any]]:
        return self.daemon.effective_config()

    @_translated
    async def set_config(self, config: Mapping[str, Any]) -> None:
        await self.daemon.set_config(config)

    @_translated
    async def get_config_value(self, key: str) -> Any:
        return self.daemon.get_config_value(key)

    @_translated
    async def set_config_value(self, key: str, value: Any) -> None:
        await self.daemon.set_config({key: value})

    async def list_peers(self) -> Sequence[Mapping[str, Any]]:
        return self.daemon.peers()

    @_translated
    async def remove_peer(self, path: str, peer: str) -> Mapping[str, Any]:
        return await self.daemon.remove_peer(path, peer)

    @_translated
    async def allow_peer(self, path: str, peer: str) -> Mapping[str, Any]:
        return await self.daemon.allow_peer(path, peer)

    async def list_transfers(self) -> Sequence[Mapping[str, Any]]:
        return self.daemon.transfers()

    @_translated
    async def rescan(self, path: str | None = None) -> int:
        return self.daemon.rescan(path)

    @_translated
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
