"""Runtime: the asyncio side -- sockets, clocks, timers -- driving the sans-I/O layers."""
