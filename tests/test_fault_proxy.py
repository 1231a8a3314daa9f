"""The fault proxy: its sans-I/O core with a fake clock, then real loopback sockets.

Timing assertions are lower bounds (a delay the proxy must add); upper bounds
are only generous safety nets, since the machine is shared and noisy.
"""

from __future__ import annotations

import asyncio
import random
import subprocess
import sys
import time

import pytest

from csembed.lab.fault_proxy import FaultProxy, Faults, parse_address
from csembed.lab.faults import (
    LinkDirection,
    TokenBucket,
    flip_bit,
    parse_probability,
    parse_rate,
    parse_setting,
)

LOOPBACK = "127.0.0.1"

# -- core ---------------------------------------------------------------------


def test_faults_validate_their_ranges() -> None:
    with pytest.raises(ValueError, match="loss"):
        Faults(loss=1.5)
    with pytest.raises(ValueError, match="bandwidth"):
        Faults(bandwidth=-1)
    with pytest.raises(ValueError, match="latency"):
        Faults(latency=-0.1)


def test_settings_parse_as_written_on_the_command_line() -> None:
    assert parse_probability("2%") == pytest.approx(0.02)
    assert parse_probability("0.5") == 0.5
    assert parse_rate("64KiB/s") == 65536 and parse_rate("1 MB") == 1_000_000
    assert parse_setting("reset-after", "1KiB") == ("reset_after", 1024)
    assert parse_setting("latency", "200ms") == ("latency", pytest.approx(0.2))
    with pytest.raises(ValueError, match="unknown fault"):
        parse_setting("colour", "red")
    with pytest.raises(ValueError):
        parse_probability("150%")
    assert parse_address(":9000") == (LOOPBACK, 9000)
    assert parse_address("[::1]:80") == ("::1", 80)
    with pytest.raises(ValueError):
        parse_address("localhost")


def test_token_bucket_paces_to_the_rate() -> None:
    bucket = TokenBucket()
    rate = 1000
    done = [bucket.pass_time(100, rate, now=0.0) for _ in range(50)]
    # 5000 bytes at 1000 B/s: the last is through after ~5 s less the small burst
    assert done[-1] == pytest.approx(5.0 - TokenBucket.BURST_SECONDS, abs=1e-9)
    assert done == sorted(done)
    assert bucket.pass_time(100, 0, now=1.0) == 1.0  # 0 = unlimited


def test_ordered_direction_keeps_order_under_jitter() -> None:
    direction = LinkDirection(random.Random(1), TokenBucket(), ordered=True)
    faults = Faults(latency=0.1, jitter=0.5)
    times = [direction.decide(b"x", faults, now=i * 0.01).deliver_at for i in range(200)]
    assert times == sorted(times)
    assert all(t >= 0.1 + i * 0.01 for i, t in enumerate(times))


def test_reset_after_truncates_at_the_byte_count() -> None:
    direction = LinkDirection(random.Random(1), TokenBucket(), ordered=True)
    fate = direction.decide(b"a" * 100, Faults(reset_after=150), now=0.0, sent=120)
    assert fate.reset and fate.data == b"a" * 30


def test_same_seed_same_decisions() -> None:
    faults = Faults(loss=0.3, flip_probability=0.3, jitter=0.01)

    def run(seed: int) -> list[tuple[bytes, float, bool]]:
        direction = LinkDirection(random.Random(seed), TokenBucket(), ordered=False)
        fates = [direction.decide(bytes([i]) * 8, faults, now=i) for i in range(100)]
        return [(f.data, f.deliver_at, f.dropped) for f in fates]

    assert run(3) == run(3)
    assert run(3) != run(4)
    assert flip_bit(b"\x00\x00", 9) == b"\x00\x02"


# -- real sockets -------------------------------------------------------------


async def _echo_server() -> asyncio.Server:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    return await asyncio.start_server(echo, LOOPBACK, 0)


def _port(server: asyncio.Server) -> int:
    return int(server.sockets[0].getsockname()[1])


async def _round_trip(address: tuple[str, int], payload: bytes) -> tuple[float, bytes]:
    reader, writer = await asyncio.open_connection(*address)
    started = time.monotonic()
    writer.write(payload)
    await writer.drain()
    got = await asyncio.wait_for(reader.readexactly(len(payload)), 30)
    elapsed = time.monotonic() - started
    writer.close()
    return elapsed, got


def test_tcp_latency_is_applied_each_way_and_changes_at_run_time() -> None:
    async def main() -> None:
        server = await _echo_server()
        async with server, FaultProxy((LOOPBACK, 0), (LOOPBACK, _port(server)),
                                      faults=Faults(latency=0.15)) as proxy:
            elapsed, got = await _round_trip(proxy.address, b"ping")
            assert got == b"ping"
            assert 0.3 <= elapsed < 10  # 150 ms out, 150 ms back
            proxy.update(latency=0.0)
            fast, _ = await _round_trip(proxy.address, b"ping")
            assert fast < elapsed
            assert proxy.stats.connections == 2

    asyncio.run(main())


def test_tcp_bandwidth_cap_paces_a_bulk_transfer() -> None:
    size, rate = 120_000, 100_000

    async def main() -> None:
        received = asyncio.get_running_loop().create_future()

        async def sink(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            data = await reader.read(-1)
            received.set_result((time.monotonic(), len(data)))
            writer.close()

        server = await asyncio.start_server(sink, LOOPBACK, 0)
        async with server, FaultProxy((LOOPBACK, 0), (LOOPBACK, _port(server)),
                                      faults=Faults(bandwidth=rate)) as proxy:
            reader, writer = await asyncio.open_connection(*proxy.address)
            started = time.monotonic()
            writer.write(bytes(size))
            await writer.drain()
            writer.write_eof()
            finished, count = await asyncio.wait_for(received, 60)
            writer.close()
            assert count == size
            # the first 20 ms of rate is a burst; the rest is paced
            assert finished - started >= (size - rate * TokenBucket.BURST_SECONDS) / rate - 0.01
            assert proxy.stats.bytes_up == size

    asyncio.run(main())


def test_tcp_bit_flips_are_exactly_what_the_proxy_reports() -> None:
    payload = random.Random(9).randbytes(200_000)

    async def main() -> None:
        server = await _echo_server()
        async with server, FaultProxy((LOOPBACK, 0), (LOOPBACK, _port(server)),
                                      faults=Faults(flip_probability=1.0),
                                      rng=random.Random(42)) as proxy:
            _, got = await _round_trip(proxy.address, payload)
            flipped_bits = sum((a ^ b).bit_count() for a, b in zip(payload, got, strict=True))
            # each chunk crossing either way had exactly one bit flipped; two flips of the
            # same bit (once up, once down) would cancel, so count at most, and some surely
            assert 0 < flipped_bits <= proxy.stats.flips
            assert proxy.stats.flips >= 2 * (len(payload) // (16 * 1024))

    asyncio.run(main())


def test_tcp_reset_after_bytes_gives_the_client_a_reset() -> None:
    async def main() -> None:
        server = await _echo_server()
        async with server, FaultProxy((LOOPBACK, 0), (LOOPBACK, _port(server)),
                                      faults=Faults(reset_after=1000)) as proxy:
            reader, writer = await asyncio.open_connection(*proxy.address)
            writer.write(bytes(600))
            await writer.drain()
            got = await asyncio.wait_for(reader.readexactly(400), 10)  # 600 up + 400 down
            assert got == bytes(400)
            with pytest.raises((ConnectionResetError, asyncio.IncompleteReadError)):
                await asyncio.wait_for(reader.readexactly(1), 10)
            writer.close()
            assert proxy.stats.resets == 1
            assert proxy.stats.bytes_up + proxy.stats.bytes_down == 1000

    asyncio.run(main())


def test_tcp_reset_connections_and_target_down() -> None:
    async def main() -> None:
        server = await _echo_server()
        port = _port(server)
        async with FaultProxy((LOOPBACK, 0), (LOOPBACK, port)) as proxy:
            reader, writer = await asyncio.open_connection(*proxy.address)
            writer.write(b"hi")
            assert await asyncio.wait_for(reader.readexactly(2), 10) == b"hi"
            assert proxy.reset_connections() == 1
            with pytest.raises((ConnectionResetError, asyncio.IncompleteReadError)):
                await asyncio.wait_for(reader.readexactly(1), 10)
            writer.close()
            server.close()
            await server.wait_closed()
            reader, writer = await asyncio.open_connection(*proxy.address)
            with pytest.raises((ConnectionResetError, asyncio.IncompleteReadError)):
                await asyncio.wait_for(reader.readexactly(1), 10)
            writer.close()

    asyncio.run(main())


class _UdpSink(asyncio.DatagramProtocol):
    def __init__(self, echo: bool) -> None:
        self.echo = echo
        self.received: list[bytes] = []
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self.received.append(data)
        if self.echo and self.transport is not None:
            self.transport.sendto(data, addr)


async def _until(condition, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


def test_udp_loss_rate_within_bounds_for_a_fixed_seed() -> None:
    count = 600

    async def main() -> None:
        loop = asyncio.get_running_loop()
        sink_transport, sink = await loop.create_datagram_endpoint(
            lambda: _UdpSink(echo=False), local_addr=(LOOPBACK, 0))
        target = sink_transport.get_extra_info("sockname")
        async with FaultProxy((LOOPBACK, 0), target, transport="udp",
                              faults=Faults(loss=0.2), rng=random.Random(7)) as proxy:
            client, _ = await loop.create_datagram_endpoint(
                asyncio.DatagramProtocol, remote_addr=proxy.address)
            for i in range(count):
                client.sendto(i.to_bytes(4, "big"))
                if i % 50 == 49:  # keep loopback's own buffers far from full
                    await _until(lambda i=i: proxy.stats.datagrams >= i + 1)
            await _until(lambda: len(sink.received) + proxy.stats.dropped == count)
            client.close()
        sink_transport.close()
        lost = count - len(sink.received)
        assert lost == proxy.stats.dropped
        assert 0.14 * count <= lost <= 0.26 * count
        # which datagrams were lost is a function of the seed alone
        expected = random.Random(7)
        predicted = {i for i in range(count) if expected.random() < 0.2}
        got = {int.from_bytes(d, "big") for d in sink.received}
        assert set(range(count)) - got == predicted

    asyncio.run(main())


def test_udp_flips_and_latency_follow_the_seed() -> None:
    async def run(seed: int) -> tuple[list[int], float]:
        loop = asyncio.get_running_loop()
        echo_transport, _ = await loop.create_datagram_endpoint(
            lambda: _UdpSink(echo=True), local_addr=(LOOPBACK, 0))
        target = echo_transport.get_extra_info("sockname")
        faults = Faults(flip_probability=0.3, latency=0.01)
        async with FaultProxy((LOOPBACK, 0), target, transport="udp", faults=faults,
                              rng=random.Random(seed)) as proxy:
            client_transport, client = await loop.create_datagram_endpoint(
                lambda: _UdpSink(echo=False), remote_addr=proxy.address)
            changed: list[int] = []
            started = time.monotonic()
            for i in range(30):  # one round trip at a time: the RNG sees a fixed order
                sent = bytes([i]) * 32
                client_transport.sendto(sent)
                await _until(lambda i=i: len(client.received) == i + 1)
                if client.received[-1] != sent:
                    changed.append(i)
            elapsed = time.monotonic() - started
            client_transport.close()
        echo_transport.close()
        return changed, elapsed

    async def main() -> None:
        first, elapsed = await run(11)
        again, _ = await run(11)
        assert first == again and first  # same seed, same flipped datagrams
        assert elapsed >= 30 * 2 * 0.01

    asyncio.run(main())


def test_command_line_proxy_forwards_and_takes_settings_on_stdin() -> None:
    help_text = subprocess.run([sys.executable, "-m", "csembed.lab.fault_proxy", "--help"],
                               capture_output=True, text=True, check=True).stdout
    assert "--latency" in help_text and "--flip-probability" in help_text

    async def main() -> None:
        server = await _echo_server()
        async with server:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "csembed.lab.fault_proxy", "--listen", f"{LOOPBACK}:0",
                "--target", f"{LOOPBACK}:{_port(server)}", "--latency", "200ms",
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            assert proc.stdout is not None and proc.stdin is not None
            try:
                banner = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
                assert banner.startswith("fault proxy tcp"), banner
                address = parse_address(banner.split()[3])
                elapsed, got = await _round_trip(address, b"hello")
                assert got == b"hello" and elapsed >= 0.4
                proc.stdin.write(b"latency=0ms\n")
                await proc.stdin.drain()
                assert proc.stderr is not None
                changed = await asyncio.wait_for(proc.stderr.readline(), 30)
                assert b"latency=0.0" in changed
                fast, _ = await _round_trip(address, b"hello")
                assert fast < elapsed
            finally:
                proc.terminate()
                assert await asyncio.wait_for(proc.wait(), 30) == 0

    asyncio.run(main())


def test_tcp_a_reset_from_one_end_reaches_the_other() -> None:
    async def main() -> None:
        accepted: asyncio.Future[asyncio.StreamReader] = \
            asyncio.get_running_loop().create_future()

        async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            accepted.set_result(reader)
            writer.write(b"x" * 100_000)  # unread by the client: its close becomes a RST
            await writer.drain()
            await reader.read(-1)
            writer.close()

        server = await asyncio.start_server(hold, LOOPBACK, 0)
        async with server, FaultProxy((LOOPBACK, 0), (LOOPBACK, _port(server))) as proxy:
            reader, writer = await asyncio.open_connection(*proxy.address)
            writer.write(b"hello")
            server_side = await asyncio.wait_for(accepted, 10)
            assert await asyncio.wait_for(server_side.readexactly(5), 10) == b"hello"
            await asyncio.wait_for(reader.readexactly(10), 10)
            from csembed.lab.fault_proxy import _abort_with_rst
            _abort_with_rst(writer)  # the client dies (as a SIGKILLed process with unread data)
            try:
                rest = await asyncio.wait_for(server_side.read(-1), 10)
            except ConnectionResetError:
                rest = b""
            assert rest == b""  # the server saw its end close, not a connection left hanging
            await _until(lambda: proxy.open_connections == 0, 10)

    asyncio.run(main())
