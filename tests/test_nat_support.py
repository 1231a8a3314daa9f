"""Helpers for the NAT tests: a real STUN server (coturn's ``turnserver``, STUN
only) with a generated minimal config, and a lab of network namespaces with
NAT routers (nftables) and, optionally, a real UPnP gateway (miniupnpd), all
created and torn down by the test."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

TURNSERVER = shutil.which("turnserver")


def free_udp_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def stun_config(directory: Path, ips: list[str], port: int) -> Path:
    """A coturn config serving plain STUN on ``ips:port`` and nothing else."""
    lines = [f"listening-ip={ip}" for ip in ips] + [
        f"listening-port={port}", "stun-only", "no-tcp", "no-tls", "no-dtls", "no-cli",
        "no-auth", "no-software-attribute", "simple-log",
        f"log-file={directory / 'turnserver.log'}", f"pidfile={directory / 'turnserver.pid'}",
        f"userdb={directory / 'turndb'}"]
    path = directory / "turnserver.conf"
    path.write_text("\n".join(lines) + "\n")
    return path


@contextlib.contextmanager
def stun_server(directory: Path, ips: list[str], port: int,
                netns: str | None = None) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``turnserver`` (in ``netns`` if given) until the block ends."""
    assert TURNSERVER is not None
    config = stun_config(directory, ips, port)
    command = [TURNSERVER, "-c", str(config)]
    if netns is not None:
        command = ["ip", "netns", "exec", netns, *command]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # poll until it answers, not a fixed sleep
            if process.poll() is not None:
                raise RuntimeError("turnserver exited at start: "
                                   + (directory / "turnserver.log").read_text()[-2000:])
            log = directory / "turnserver.log"
            if log.exists() and "Total General servers" in log.read_text():
                break
            time.sleep(0.05)
        yield process
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# -- the namespace lab -------------------------------------------------------------------

MINIUPNPD = shutil.which("miniupnpd")
NFT = shutil.which("nft")


def _run(*args: str, input: str | None = None) -> None:
    subprocess.run(list(args), check=True, capture_output=True, timeout=30, text=True,
                   input=input)


def lab_skip_reason() -> str | None:
    """Why the namespace lab cannot run here, or ``None``."""
    if os.geteuid() != 0:
        return "needs root to create network namespaces"
    for tool, path in (("ip", shutil.which("ip")), ("nft", NFT), ("turnserver", TURNSERVER)):
        if path is None:
            return f"{tool} is not installed (apt-get install iproute2 nftables coturn)"
    return None


ROUTER_RULES = """\
table ip csnat {{
    chain postrouting {{
        type nat hook postrouting priority 100; policy accept;
        oifname "wan" masquerade {flags}
    }}
}}
table inet csfilter {{
    chain input {{
        type filter hook input priority 0; policy drop;
        ct state established,related accept
        iifname "lo" accept
        iifname "lan" accept
    }}
    chain forward {{
        type filter hook forward priority 0; policy drop;
        ct state established,related accept
        iifname "lan" oifname "wan" accept
        ct status dnat accept
    }}
}}
"""

MINIUPNPD_TABLES = """\
table inet miniupnpd {
    chain forward {
        type filter hook forward priority 0; policy accept;
        jump miniupnpd
    }
    chain miniupnpd {
    }
    chain prerouting {
        type nat hook prerouting priority -100; policy accept;
        jump prerouting_miniupnpd
    }
    chain postrouting {
        type nat hook postrouting priority 100; policy accept;
        jump postrouting_miniupnpd
    }
    chain prerouting_miniupnpd {
    }
    chain postrouting_miniupnpd {
    }
}
"""


class NatLab:
    """An "internet" segment (tracker, STUN) and two homes behind NAT routers.

    Namespaces: ``inet`` (a bridge with the tracker's and two STUN addresses),
    routers ``ra``/``rb`` (``wan`` on the bridge, ``lan`` to their home;
    nftables masquerade, ``persistent`` for a port-preserving cone NAT,
    ``random`` for a symmetric one; unsolicited inbound dropped), and hosts
    ``ha``/``hb`` behind them. Everything is torn down by :meth:`close`.
    """

    def __init__(self, root: Path, *, nat_a: str = "cone", nat_b: str = "cone",
                 upnp_a: bool = False) -> None:
        self.root = root
        tag = uuid.uuid4().hex[:6]
        self.ns = {name: f"cs{name}{tag}" for name in ("inet", "ra", "rb", "ha", "hb")}
        r = int(tag[:4], 16)
        # The "internet" is CGNAT space, except with a UPnP gateway: miniupnpd refuses to
        # map ports on a reserved external address, so that lab's segment uses 11.0.0.0/8.
        # Either way these addresses exist only inside the namespaces made here.
        self.wan = f"11.{r % 250}.{r // 250 % 250}" if upnp_a else \
            f"100.{64 + r % 60}.{r // 60 % 250}"
        self.home = {"a": f"10.{200 + r % 20}.{r % 250}", "b": f"10.{220 + r % 20}.{r % 250}"}
        self.tracker_ip = f"{self.wan}.1"
        self.stun_ips = [f"{self.wan}.10", f"{self.wan}.11"]
        self.router_ip = {"a": f"{self.wan}.2", "b": f"{self.wan}.3"}
        self.host_ip = {x: f"{self.home[x]}.2" for x in "ab"}
        self.processes: list[subprocess.Popen[bytes]] = []
        self._stack = contextlib.ExitStack()
        self._nat = {"a": nat_a, "b": nat_b}
        self._upnp_a = upnp_a
        self._tag = tag

    def prefix(self, name: str) -> list[str]:
        return ["ip", "netns", "exec", self.ns[name]]

    def _ip(self, *args: str) -> None:
        _run("ip", *args)

    def build(self) -> NatLab:
        ns = self.ns
        for name in ns.values():
            self._ip("netns", "add", name)
        for name in ns.values():
            self._ip("-n", name, "link", "set", "lo", "up")
        self._ip("-n", ns["inet"], "link", "add", "name", "csbr", "type", "bridge")
        self._ip("-n", ns["inet"], "link", "set", "csbr", "up")
        for ip in [self.tracker_ip, *self.stun_ips]:
            self._ip("-n", ns["inet"], "addr", "add", f"{ip}/24", "dev", "csbr")
        for x in "ab":
            router, host = ns[f"r{x}"], ns[f"h{x}"]
            self._ip("link", "add", f"csw{x}{self._tag}", "netns", ns["inet"], "type", "veth",
                     "peer", "name", "wan", "netns", router)
            self._ip("-n", ns["inet"], "link", "set", f"csw{x}{self._tag}", "master", "csbr")
            self._ip("-n", ns["inet"], "link", "set", f"csw{x}{self._tag}", "up")
            self._ip("-n", router, "addr", "add", f"{self.router_ip[x]}/24", "dev", "wan")
            self._ip("-n", router, "link", "set", "wan", "up")
            self._ip("link", "add", f"csl{x}{self._tag}", "netns", router, "type", "veth",
                     "peer", "name", "eth0", "netns", host)
            self._ip("-n", router, "link", "set", f"csl{x}{self._tag}", "name", "lan")
            self._ip("-n", router, "addr", "add", f"{self.home[x]}.1/24", "dev", "lan")
            self._ip("-n", router, "link", "set", "lan", "up")
            self._ip("-n", host, "addr", "add", f"{self.host_ip[x]}/24", "dev", "eth0")
            self._ip("-n", host, "link", "set", "eth0", "up")
            self._ip("-n", host, "route", "add", "default", "via", f"{self.home[x]}.1")
            _run(*self.prefix(f"r{x}"), "sysctl", "-qw", "net.ipv4.ip_forward=1")
            flags = "persistent" if self._nat[x] == "cone" else "random"
            _run(*self.prefix(f"r{x}"), "nft", "-f", "-", input=ROUTER_RULES.format(flags=flags))
        (self.root / "stun").mkdir(exist_ok=True)
        self._stack.enter_context(stun_server(self.root / "stun", self.stun_ips, 3478,
                                              netns=ns["inet"]))
        if self._upnp_a:
            self.start_miniupnpd()
        return self

    def start_miniupnpd(self) -> None:
        assert MINIUPNPD is not None
        _run(*self.prefix("ra"), "nft", "-f", "-", input=MINIUPNPD_TABLES)
        conf = self.root / "miniupnpd.conf"
        conf.write_text("\n".join([
            "ext_ifname=wan", f"ext_ip={self.router_ip['a']}", "listening_ip=lan",
            "http_port=5555", "enable_upnp=yes",
            "enable_natpmp=yes", "secure_mode=yes", "system_uptime=no",
            f"uuid={uuid.uuid4()}", "upnp_table_name=miniupnpd",
            "upnp_nat_table_name=miniupnpd", "upnp_forward_chain=miniupnpd",
            "upnp_nat_chain=prerouting_miniupnpd",
            "upnp_nat_postrouting_chain=postrouting_miniupnpd",
            f"allow 1024-65535 {self.home['a']}.0/24 1024-65535",
            "deny 0-65535 0.0.0.0/0 0-65535"]) + "\n")
        log = (self.root / "miniupnpd.log").open("wb")
        process = subprocess.Popen([*self.prefix("ra"), MINIUPNPD, "-d", "-f", str(conf),
                                    "-P", str(self.root / "miniupnpd.pid")],
                                   stdout=log, stderr=log)
        self.processes.append(process)

    def nft_ruleset(self, router: str) -> str:
        return subprocess.run([*self.prefix(router), "nft", "list", "ruleset"],
                              capture_output=True, text=True, timeout=30).stdout

    def close(self) -> None:
        for process in self.processes:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._stack.close()
        for name in self.ns.values():
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30)
