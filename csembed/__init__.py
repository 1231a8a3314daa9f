"""csembed: ClearSkies friend-to-friend directory sync for small devices.

The package is layered as DESIGN.md describes: ``csembed.native`` (hashing and
rsync primitives, C with a pure-Python twin), ``csembed.protocol`` (sans-I/O
wire format, sessions and extensions), the engines and the asyncio runtime
above them, and ``csembed.cli`` as the front end.
"""

__version__ = "0.1.0"
