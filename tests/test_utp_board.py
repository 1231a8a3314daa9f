"""uTP windows and the per-socket connection cap follow the board profile."""

from __future__ import annotations

import asyncio
import dataclasses
import random
import socket

import pytest

from csembed.board_profile import MemoryLimits, iter_boards, load_board
from csembed.runtime.utp_endpoint import (
    MAX_CONNECTIONS,
    MIN_WINDOW_PACKETS,
    UtpEndpoint,
    board_limits,
)
from csembed.transport.utp import Connected, Data, UtpConfig, UtpConnection
from csembed.transport.utp_packet import ST_RESET, ST_STATE, ST_SYN, Packet, decode, encode

KiB, MiB = 1 << 10, 1 << 20


def test_every_board_gets_windows_within_its_per_connection_share() -> None:
    for board in iter_boards():
        memory = board.memory
        limits = board_limits(memory)
        share = memory.max_bytes_in_flight // memory.max_connections
        floor = MIN_WINDOW_PACKETS * limits.config.packet_size
        for figure in (limits.config.recv_window, limits.config.max_cwnd, limits.write_high):
            assert figure <= max(share, floor), board.name
        assert limits.config.recv_window <= UtpConfig().recv_window
        assert limits.config.max_cwnd <= UtpConfig().max_cwnd
        assert limits.max_connections == min(MAX_CONNECTIONS,
                                             memory.max_connections + memory.max_handshakes)


def test_wifi_piano_and_desktop_figures() -> None:
    piano = board_limits(load_board("wifi-piano").memory)
    # 1 MiB in flight over 4 connections: 256 KiB each, not the 1 MiB / 4 MiB defaults
    assert piano.config.recv_window == piano.config.max_cwnd == piano.write_high == 256 * KiB
    assert piano.max_connections == 4 + 64
    desktop = board_limits(load_board("desktop").memory)
    assert desktop.config.recv_window == 1 * MiB and desktop.max_connections == MAX_CONNECTIONS


def test_a_tiny_budget_keeps_a_window_of_a_few_packets() -> None:
    memory = dataclasses.replace(load_board("wifi-piano").memory,
                                 max_bytes_in_flight=64 * KiB, max_connections=4096)
    limits = board_limits(memory)
    assert limits.config.recv_window == MIN_WINDOW_PACKETS * 1200
    assert limits.max_connections == MAX_CONNECTIONS


def _transfer_into_a_reader_that_stops(config: UtpConfig, size: int) -> tuple[int, int, int]:
    """Send ``size`` bytes to a peer that reads nothing until the sender stalls (fake
    clock, in-memory network, 10 ms each way). Returns the largest window the reader
    advertised, the largest congestion window, and the most bytes acknowledged but
    unread at once; then lets the reader drain and checks every byte arrived."""
    rng = random.Random(5)
    now = 100.0
    a = UtpConnection.dial(now, rng.randrange, config)
    b: UtpConnection | None = None
    wire: list[tuple[float, int, bytes]] = [(now + 0.01, 1, d)
                                            for d in a.datagrams_to_send(now)]
    data = rng.randbytes(size)
    written = 0
    reading = False
    received = bytearray()
    max_window = max_cwnd = max_unread = 0
    connected = False
    start = now
    while len(received) < size and now < 1000:
        reading = reading or now > start + 30  # the sender long stalled: start reading
        if reading and b is not None:
            for event in iter(b.next_event, None):
                if isinstance(event, Data):
                    received += event.data
        connected = connected or any(isinstance(e, Connected) for e in iter(a.next_event, None))
        if connected and written < size and a.send_buffered < 64 * KiB:
            chunk = data[written:written + 32 * KiB]
            a.send(chunk)
            written += len(chunk)
        max_cwnd = max(max_cwnd, int(a.cwnd))
        max_unread = max(max_unread, written - a.send_buffered - len(received))
        for i, end in ((1, a), (0, b)):
            if end is not None:
                wire += [(now + 0.01, i, d) for d in end.datagrams_to_send(now)]
        timers = [t for t in (a.get_timer(), b.get_timer() if b else None) if t is not None]
        upcoming = min([t for t, _, _ in wire] + timers)
        now = max(now, upcoming if reading or upcoming <= start + 30 else start + 30.001)
        due = [w for w in wire if w[0] <= now]
        wire = [w for w in wire if w[0] > now]
        for _, to, datagram in due:
            packet = decode(datagram)
            if to == 1:
                if b is None and packet.type == ST_SYN:
                    b = UtpConnection.accept(packet, now, rng.randrange, config)
                elif b is not None:
                    b.receive_packet(packet, now)
            else:
                if packet.type in (ST_STATE,):
                    max_window = max(max_window, packet.wnd_size)
                a.receive_packet(packet, now)
        for end in (a, b):
            if end is not None and (t := end.get_timer()) is not None and t <= now:
                end.handle_timer(now)
    assert bytes(received) == data
    return max_window, max_cwnd, max_unread


def test_piano_connection_never_buffers_more_than_its_share() -> None:
    limits = board_limits(load_board("wifi-piano").memory)
    window, cwnd, unread = _transfer_into_a_reader_that_stops(limits.config, 1 * MiB)
    assert window <= 256 * KiB and cwnd <= 256 * KiB
    assert 200 * KiB < unread <= 256 * KiB  # the window filled, and no further
    # the same transfer with the old fixed defaults parks far more at the reader
    _, _, unread_default = _transfer_into_a_reader_that_stops(UtpConfig(), 1 * MiB)
    assert unread_default > 512 * KiB


def _syn(connection_id: int) -> bytes:
    return encode(Packet(ST_SYN, connection_id, 0, 0, 65535, 1, 0))


def test_socket_caps_connections_at_the_boards_figure() -> None:
    async def main() -> None:
        memory: MemoryLimits = dataclasses.replace(load_board("wifi-piano").memory,
                                                   max_connections=1, max_handshakes=2)
        limits = board_limits(memory)
        assert limits.max_connections == 3
        endpoint = await UtpEndpoint.open("127.0.0.1", 0, limits=limits)
        accepted: list[object] = []
        endpoint.on_accept = accepted.append
        assert endpoint.config.recv_window == limits.config.recv_window
        loop = asyncio.get_running_loop()
        client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        client.setblocking(False)
        client.bind(("127.0.0.1", 0))
        try:
            answers = []
            for connection_id in (100, 200, 300, 400):
                await loop.sock_sendto(client, _syn(connection_id), endpoint.local_address)
                async with asyncio.timeout(10):
                    answer = decode(await loop.sock_recv(client, 2048))
                answers.append(answer.type)
            assert answers == [ST_STATE, ST_STATE, ST_STATE, ST_RESET]
            assert len(accepted) == 3
            transport = accepted[0]
            assert isinstance(transport, asyncio.WriteTransport)
            transport.set_write_buffer_limits(high=8 * MiB)  # as the session stream asks
            assert transport.get_write_buffer_limits() == (limits.write_high // 2,
                                                            limits.write_high)
            with pytest.raises(ConnectionError, match="3 connections"):
                await endpoint.connect("127.0.0.1", 9, asyncio.Protocol)
        finally:
            client.close()
            endpoint.close()

    asyncio.run(main())


def test_connection_manager_opens_its_utp_socket_with_the_boards_limits() -> None:
    from csembed.protocol.core import CoreConfig
    from csembed.protocol.core_access import CredentialRegistry
    from csembed.runtime.connection_manager import ConnectionManager
    from csembed.runtime.rate_limit import DaemonRateLimits

    async def main() -> None:
        manager = ConnectionManager(object(), CredentialRegistry(),  # type: ignore[arg-type]
                                    CoreConfig(), limits=DaemonRateLimits.from_rates(0, 0),
                                    max_connections=4)
        manager.utp_limits = board_limits(load_board("wifi-piano").memory)
        await manager.listen("127.0.0.1", 0)
        try:
            assert manager.utp is not None
            assert manager.utp.config.recv_window == manager.utp.config.max_cwnd == 256 * KiB
            assert manager.utp.max_connections == 68
            assert manager.utp.write_high == 256 * KiB
        finally:
            await manager.close()

    asyncio.run(main())
