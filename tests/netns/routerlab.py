"""A router in namespaces for the networking tests: LAN client -- router -- WAN host.

The WAN host has no route back to the LAN, so only masquerading lets LAN
traffic come back. Everything is torn down by `close()` (used in fixtures).
"""

from __future__ import annotations

import subprocess
import sys

from lab.netns import Netns, stop_processes, veth, wait_port

HTTP_PROBE = ("import socket,sys\n"
              "s=socket.create_connection((sys.argv[1],int(sys.argv[2])),timeout=float(sys.argv[3]))\n"
              "if sys.argv[5:]==['tls']:\n"
              "    import ssl; s=ssl._create_unverified_context().wrap_socket(s)\n"
              "s.sendall(b'GET '+sys.argv[4].encode()+b' HTTP/1.0\\r\\nHost: x\\r\\n\\r\\n')\n"
              "data=b''\n"
              "while True:\n"
              "    c=s.recv(65536)\n"
              "    if not c: break\n"
              "    data+=c\n"
              "print(data.split(b'\\r\\n')[0].decode())\n")


class RouterLab:
    def __init__(self):
        self.nss: list[Netns] = []
        self.procs: list[subprocess.Popen] = []
        try:
            self.router, self.client, self.wan = (self._ns() for _ in range(3))
            veth(self.router, "lan0", self.client, "eth0")
            veth(self.router, "wan0", self.wan, "eth0")
            self.router.run("ip", "addr", "add", "10.77.0.1/24", "dev", "lan0")
            self.router.run("ip", "addr", "add", "192.0.2.1/24", "dev", "wan0")
            self.router.run("sysctl", "-qw", "net.ipv4.ip_forward=1")
            self.client.run("ip", "addr", "add", "10.77.0.50/24", "dev", "eth0")
            self.client.run("ip", "route", "add", "default", "via", "10.77.0.1")
            self.wan.run("ip", "addr", "add", "192.0.2.10/24", "dev", "eth0")
        except BaseException:
            self.close()
            raise

    def _ns(self) -> Netns:
        ns = Netns()
        self.nss.append(ns)
        return ns

    def http_server(self, ns: Netns, bind: str, port: int, directory: str) -> subprocess.Popen:
        p = ns.popen(sys.executable, "-m", "http.server", "--bind", bind, str(port),
                     "--directory", directory, stdout=subprocess.DEVNULL,
                     stderr=subprocess.PIPE, text=True)
        self.procs.append(p)
        if not wait_port(ns, "127.0.0.1" if bind == "0.0.0.0" else bind, port, timeout=15):
            raise RuntimeError(f"http.server on {bind}:{port} did not start")
        return p

    def spawn(self, ns: Netns, *cmd, **kw) -> subprocess.Popen:
        p = ns.popen(*cmd, **kw)
        self.procs.append(p)
        return p

    @staticmethod
    def http_status(ns: Netns, host: str, port: int, timeout: float = 2.0, path: str = "/",
                    tls: bool = False) -> str | None:
        """The status line of GET `path` (over HTTPS with `tls`, the certificate
        unchecked), or None if nothing answered."""
        r = ns.run(sys.executable, "-c", HTTP_PROBE, host, str(port), str(timeout), path,
                   *(["tls"] if tls else []), check=False, timeout=timeout + 10)
        return r.stdout.strip() if r.returncode == 0 else None

    def close(self) -> None:
        stop_processes(self.procs)
        for ns in self.nss:
            ns.close()
