"""What the daemon announces and reports from STUN answers and port mappings."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from csembed.runtime.reach import Reach, ReachConfig


def _reach(endpoint: Any = None, **config: Any) -> Reach:
    return Reach(endpoint, 40121, ReachConfig(**config), tracker=("198.51.100.1", 7000),
                 on_change=lambda: None)


def test_defaults_ask_the_trackers_host_and_map_ports_only_off_loopback() -> None:
    reach = _reach(SimpleNamespace(local_address=("10.0.0.2", 40121)))
    assert reach.stun_servers == [("198.51.100.1", 3478)] and reach.mapping_enabled
    local = Reach(None, 1, ReachConfig(), tracker=("127.0.0.1", 7000), on_change=lambda: None)
    assert not local.mapping_enabled
    none = Reach(None, 1, ReachConfig(), tracker=None, on_change=lambda: None)
    assert none.stun_servers == [] and not none.mapping_enabled
    assert none.status()["summary"] == "uTP is off: only TCP addresses are used"


def test_cone_nat_announces_the_public_utp_address() -> None:
    reach = _reach(SimpleNamespace(local_address=("10.0.0.2", 40121)), port_mapping=False)
    reach.seen = {("198.51.100.10", 3478): ("203.0.113.7", 40121),
                  ("198.51.100.11", 3478): ("203.0.113.7", 40121)}
    assert reach.nat_type() == "cone"
    assert reach.addresses() == ["utp:203.0.113.7:40121"]
    status = reach.status()
    assert status["public_udp"] == "203.0.113.7:40121" and status["hole_punching"]
    assert status["port_mapping"] == "off"


def test_symmetric_nat_announces_nothing_public_and_says_why() -> None:
    reach = _reach(SimpleNamespace(local_address=("10.0.0.2", 40121)), port_mapping=False)
    reach.seen = {("198.51.100.10", 3478): ("203.0.113.7", 50001),
                  ("198.51.100.11", 3478): ("203.0.113.7", 50002)}
    assert reach.addresses() == []
    status = reach.status()
    assert status["nat_type"] == "symmetric" and not status["hole_punching"]
    assert "hole punching cannot work" in status["summary"]


def test_mapped_address_is_announced_for_tcp_and_utp() -> None:
    reach = _reach(SimpleNamespace(local_address=("10.0.0.2", 40121)))
    reach.mapper = SimpleNamespace(external=("203.0.113.7", 40121), udp_mapped=True,
                                   describe=lambda: "upnp: TCP+UDP 203.0.113.7:40121")
    assert reach.addresses() == ["tcp:203.0.113.7:40121", "utp:203.0.113.7:40121"]
    assert reach.status()["port_mapping"].startswith("upnp:")


def test_punch_sends_one_byte_datagrams_and_does_not_double_up() -> None:
    sent: list[tuple[bytes, tuple[str, int]]] = []
    endpoint = SimpleNamespace(local_address=("10.0.0.2", 40121),
                               send_datagram=lambda d, a: sent.append((d, a)))

    async def main() -> None:
        reach = _reach(endpoint, port_mapping=False)
        reach.punch([("203.0.113.9", 40121)])
        reach.punch([("203.0.113.9", 40121)])  # already punching: no second task
        await asyncio.sleep(0)
        assert sent == [(b"\x00", ("203.0.113.9", 40121))]
        await reach.close()
    asyncio.run(main())
