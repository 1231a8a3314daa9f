"""The daemon's settings in force: command line over stored setting over board profile.

Theory of operation
-------------------
Three sources decide each value: the command line (:class:`DaemonOptions`,
fixed for the run), the stored configuration (``config.json``, changed by
``set_config``) and the board profile (the default). :class:`Settings` holds
the stored configuration and answers, for each consumer, the value in force:
rate limits, the board the share engines get (``scan_interval``), where
discovery looks (:class:`~csembed.runtime.peer_finder.DiscoverySettings`),
and :meth:`Settings.sources` -- every value with where it came from, for
``csembed config``. :meth:`Settings.check` validates new values first, so a
``set_config`` applies all of them or none.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from csembed.board_profile import BoardProfile
from csembed.discovery.lan_broadcast import LAN_PORT
from csembed.runtime.data_dir import (
    CONFIG_KEYS,
    DataDir,
    DataDirError,
    check_config_value,
    parse_host_port,
)
from csembed.runtime.errors import BadSetting, NoSuchSetting
from csembed.runtime.peer_finder import DiscoverySettings
from csembed.runtime.reach import ReachConfig

__all__ = ["DaemonOptions", "Settings"]


@dataclass
class DaemonOptions:
    """How a daemon is started (``csembed daemon``'s options)."""

    data_dir: Path
    board: BoardProfile
    listen: tuple[str, int] = ("0.0.0.0", 40121)
    tracker: tuple[str, int] | None = None  #: overrides the configured tracker
    peers: list[tuple[str, int]] = field(default_factory=list)  #: on top of the configured
    lan: bool = True  #: False: no LAN broadcast whatever the board or config say
    lan_address: str = "255.255.255.255"
    lan_port: int = LAN_PORT
    control_serial: tuple[str, int] | None = None
    scan_budget: float | None = None  #: override the board's (benchmarks)
    web: tuple[str, int] | None = None  #: the web page's address (overrides the 'web' setting)
    web_password: str | None = None  #: overrides the 'web_password' setting
    reach: ReachConfig = field(default_factory=ReachConfig)  #: uTP, STUN, port mapping
    data_dir_source: str = "command line or default"  #: shown by ``config``


def _hostport(address: tuple[str, int]) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class Settings:
    """Stored configuration over the board, under the command line."""

    def __init__(self, options: DaemonOptions, data: DataDir) -> None:
        self.options = options
        self.board = options.board
        self.data = data
        self.config: dict[str, Any] = {}

    def load(self) -> None:
        """Read the stored configuration (defaults for what is not stored)."""
        self.config = self.data.load_config()

    def check(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """The checked values; :class:`NoSuchSetting` or :class:`BadSetting` otherwise."""
        checked = {}
        for key, value in values.items():
            if key not in CONFIG_KEYS:
                raise NoSuchSetting(f"no configuration key {key[:80]!r}; known keys: "
                                    + ", ".join(CONFIG_KEYS))
            try:
                checked[key] = check_config_value(key, value)
            except DataDirError as exc:
                raise BadSetting(str(exc)) from None
        return checked

    def store(self, checked: Mapping[str, Any]) -> None:
        """Apply checked values and persist them."""
        self.config.update(checked)
        self.data.save_config(self.config)

    def get(self, key: str) -> Any:
        """One stored value; :class:`NoSuchSetting` for a key we do not know."""
        if key not in self.config:
            raise NoSuchSetting(f"no configuration key {key[:80]!r}; known keys: "
                                + ", ".join(self.config))
        return self.config[key]

    def rates(self) -> tuple[int, int]:
        """Upload and download limits in force (bytes per second, 0: none)."""
        up, down = self.config.get("upload_limit"), self.config.get("download_limit")
        network = self.board.network
        return (network.upload_rate if up is None else up,
                network.download_rate if down is None else down)

    def share_board(self) -> BoardProfile:
        """The board handed to share engines (with the ``scan_interval`` setting)."""
        interval = self.config.get("scan_interval")
        if interval is None:
            return self.board
        return dataclasses.replace(self.board, cpu=dataclasses.replace(
            self.board.cpu, scan_interval=float(interval)))

    def discovery(self) -> DiscoverySettings:
        """Where to look for peers."""
        options, config = self.options, self.config
        configured_lan = config.get("lan_broadcast")
        lan = options.lan and (self.board.network.lan_broadcast if configured_lan is None
                               else bool(configured_lan))
        tracker = options.tracker
        if tracker is None and config.get("tracker") is not None:
            tracker = parse_host_port(config["tracker"], "tracker")
        manual = list(options.peers)
        for text in config.get("peers") or []:
            address = parse_host_port(text, "peers")
            if address not in manual:
                manual.append(address)
        return DiscoverySettings(lan, tracker, tuple(manual), options.lan_address,
                                 options.lan_port)

    def sources(self, listening: tuple[str, int] | None) -> list[dict[str, Any]]:
        """Every value in force and where it comes from."""
        options, config, board = self.options, self.config, self.board
        from_board = f"board {board.name}"
        out: list[dict[str, Any]] = []

        def add(key: str, value: Any, source: str) -> None:
            out.append({"key": key, "value": value, "source": source})

        def stored_or_board(key: str, board_value: Any) -> None:
            if config.get(key) is None:
                add(key, board_value, from_board)
            else:
                add(key, config[key], "stored setting")

        up, down = board.network.upload_rate, board.network.download_rate
        stored_or_board("upload_limit", up)
        stored_or_board("download_limit", down)
        stored_or_board("scan_interval", board.cpu.scan_interval)
        if options.tracker is not None:
            add("tracker", _hostport(options.tracker), "command line (--tracker)")
        else:
            add("tracker", config.get("tracker"),
                "stored setting" if config.get("tracker") else "default (none)")
        discovery = self.discovery()
        add("lan_broadcast", discovery.lan, "command line (--no-lan)" if not options.lan
            else "stored setting" if config.get("lan_broadcast") is not None else from_board)
        add("peers", [_hostport(a) for a in discovery.manual],
            "command line (--peer) and stored setting" if options.peers else "stored setting")
        add("device_name", config.get("device_name"),
            "stored setting" if config.get("device_name") else "default (none)")
        if listening is not None:
            add("listen", _hostport(listening), "command line (--listen)")
        add("data_dir", str(self.data.root), options.data_dir_source)
        add("board", board.name, "command line (--board)")
        for key, value in (("quota", board.storage.quota),
                           ("max_file_size", board.storage.max_file_size),
                           ("max_connections", board.memory.max_connections),
                           ("max_open_transfers", board.memory.max_open_transfers)):
            add(key, value, from_board)
        return out
