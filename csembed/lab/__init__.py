"""Test-lab instruments: tools that make a real network behave badly on purpose.

Nothing here is used by the daemon itself. ``fault_proxy`` is a userspace
proxy (TCP and UDP) that adds latency, loss, a bandwidth cap, connection
resets and bit flips between two endpoints; ``faults`` is its sans-I/O core.
"""
