"""Benchmark the tracker registry and the LAN codec against their parsing floor, in one run.

Each figure is printed next to an anchor measured in the same process:

* joins: N clients (clubs of M) each open, start, announce addresses and
  register, with every resulting ``tracker.peers`` push encoded -- vs. the
  floor of the same work without any tracker logic: decoding and validating
  the same inbound messages and encoding the same outbound ones;
* pings: every client pings once -- vs. decoding the same bytes with a bare
  wire ``Decoder``;
* LAN: decoding announcements with full validation -- vs. bare ``json.loads``.

Usage: ``python tools/bench/tracker.py [--clubs 200] [--members 5]``
"""

from __future__ import annotations

import argparse
import json

from _timing import best_time

from csembed.discovery.lan_broadcast import (
    Announcement,
    decode_announcement,
    encode_announcement,
)
from csembed.discovery.tracker_messages import (
    TrackerConnection,
    TrackerPing,
    TrackerRegister,
    TrackerStart,
    encode,
    message_from_body,
)
from csembed.discovery.tracker_registry import SendData, TrackerRegistry, TrackerServerConfig
from csembed.protocol.wire import Decoder, Message


def line(label: str, ours: float, anchor: float, unit: str, count: int) -> None:
    print(f"{label:<34} {count / ours:>12,.0f} {unit}   anchor {count / anchor:>12,.0f} "
          f"{unit}   ratio {ours / anchor:5.2f}x the anchor's time")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clubs", type=int, default=200)
    parser.add_argument("--members", type=int, default=5)
    args = parser.parse_args()
    n = args.clubs * args.members
    inbound = [
        encode(TrackerStart(ttl=300))
        + encode(TrackerConnection((f"tcp:10.{i >> 8 & 255}.{i & 255}.1:40121",
                                    f"utp:10.{i >> 8 & 255}.{i & 255}.1:40122")))
        + encode(TrackerRegister({f"{i % args.clubs:064x}": f"{i:032x}"}))
        for i in range(n)
    ]
    pushed: list[bytes] = []
    registry = TrackerRegistry(TrackerServerConfig(max_clients=n + 1))

    def joins() -> None:
        for data in inbound:
            conn = registry.open("192.0.2.1", 0.0)
            registry.receive_data(conn, data, 0.0)
            for out in registry.pop_outputs():
                if isinstance(out, SendData):
                    pushed.append(out.data)

    ours = best_time(joins)

    def floor() -> None:
        for data in inbound:
            decoder = Decoder()
            decoder.receive_data(data)
            for event in decoder.events():
                assert isinstance(event, Message)
                message_from_body(event.body)
        for data in pushed:  # re-encode what the tracker sent: decode, rebuild, encode
            decoder = Decoder()
            decoder.receive_data(data)
            for event in decoder.events():
                assert isinstance(event, Message)
                message = message_from_body(event.body)
                assert message is not None
                encode(message)

    anchor = best_time(floor)
    print(f"{n} clients in {args.clubs} clubs of {args.members}; "
          f"{len(pushed)} peers messages, {sum(map(len, pushed)):,} bytes pushed")
    line("joins (start+connection+register)", ours, anchor, "joins/s", n)

    ping = encode(TrackerPing())
    conns = list(range(1, n + 1))
    def pings() -> None:
        for conn in conns:
            registry.receive_data(conn, ping, 1.0)

    ours = best_time(pings)
    decoders = [Decoder() for _ in conns]

    def bare_pings() -> None:
        for decoder in decoders:
            decoder.receive_data(ping)
            for _ in decoder.events():
                pass

    anchor = best_time(bare_pings)
    line("pings", ours, anchor, "pings/s", n)

    datagrams = [encode_announcement(Announcement(f"{i:064x}", f"{i:032x}", 40121))
                 for i in range(20000)]
    ours = best_time(lambda: [decode_announcement(d) for d in datagrams])
    anchor = best_time(lambda: [json.loads(d) for d in datagrams])
    line("LAN announcements decoded", ours, anchor, "datagrams/s", len(datagrams))


if __name__ == "__main__":
    main()
