"""HTTP: ours (waitress + os.sendfile, and waitress's copying file wrapper) vs nginx
(sendfile on) serving one 200 MB file to curl, 1 and 20 clients at once, over a
veth pair between two namespaces.

`python -m bench.http.run [--seconds S] [--size-mb N]` prints MB/s and ratios."""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import fetch_loops, server_and_client
from lab.netns import Netns, stop_processes, wait_port
from tests.bootlab import store_basename

ROOT = Path(__file__).resolve().parents[2]
SERVER_IP, CLIENT_IP, PORT = "10.89.0.1", "10.89.0.2", 8081

NGINX_CONF = """
daemon off;
master_process on;
worker_processes 2;
pid {work}/nginx.pid;
error_log {work}/nginx-error.log;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  sendfile on;
  tcp_nopush on;
  client_body_temp_path {work}/tmp;
  proxy_temp_path {work}/tmp;
  fastcgi_temp_path {work}/tmp;
  uwsgi_temp_path {work}/tmp;
  scgi_temp_path {work}/tmp;
  server {{
    listen {ip}:{port};
    root {root};
  }}
}}
"""


def load(client: Netns, url: str, clients: int, seconds: float, size: int, out: Path
         ) -> float:
    """`clients` curl loops download `url` for ~`seconds`; MB/s over all of them."""
    fetch = f'[ "$(curl -sf -o /dev/null -w "%{{size_download}}" {url})" = "{size}" ]'
    total, took = fetch_loops(client, clients, seconds, fetch, out, grace=300)
    return total * size / took / 1e6


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--size-mb", type=int, default=200)
    ap.add_argument("--clients", default="1,20")
    args = ap.parse_args()
    if not shutil.which("nginx") or not shutil.which("curl"):
        print("skip: nginx and curl are needed")
        return 0
    work = Path(tempfile.mkdtemp(prefix="nixie-bench-http-"))
    work.chmod(0o755)  # nginx workers drop privileges
    (work / "tmp").mkdir()
    www = work / "www"
    www.mkdir()
    counts = work / "counts"
    counts.mkdir()
    size = args.size_mb << 20
    blob = www / "initrd"
    with open(blob, "wb") as f, open("/dev/urandom", "rb") as r:
        for _ in range(args.size_mb):
            f.write(r.read(1 << 20))
    blob.chmod(0o644)
    base = store_basename("nixos-system-bench")
    spec = {"systems": {base: {"kernel": str(blob), "initrd": [str(blob)]}}}
    (work / "spec.json").write_text(json.dumps(spec))
    (work / "nginx.conf").write_text(NGINX_CONF.format(work=work, ip=SERVER_IP, port=PORT,
                                                       root=www))
    servers = {
        "ours-sendfile": ([sys.executable, "-m", "tests.bootlab", "--spec", str(work / "spec.json"),
                           "--listen", f"{SERVER_IP}:{PORT}", "--base-url",
                           f"http://{SERVER_IP}:{PORT}", "--tftp-root", str(www)],
                          f"http://{SERVER_IP}:{PORT}/boot/{base}/initrd"),
        "ours-copy": ([sys.executable, "-m", "tests.bootlab", "--spec", str(work / "spec.json"),
                       "--listen", f"{SERVER_IP}:{PORT}", "--base-url",
                       f"http://{SERVER_IP}:{PORT}", "--tftp-root", str(www), "--copy"],
                      f"http://{SERVER_IP}:{PORT}/boot/{base}/initrd"),
        "nginx": (["nginx", "-c", str(work / "nginx.conf"), "-p", str(work)],
                  f"http://{SERVER_IP}:{PORT}/initrd"),
    }
    try:
        with server_and_client(SERVER_IP, CLIENT_IP) as (srv, cli):
            for clients in [int(c) for c in args.clients.split(",")]:
                res: dict[str, float] = {}
                # alternate the servers, keep each one's best round (the machine is shared)
                for name, (argv, url) in [*servers.items()] * args.rounds:
                    proc = srv.popen(*argv, cwd=ROOT, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
                    try:
                        if not wait_port(srv, SERVER_IP, PORT, timeout=20):
                            raise RuntimeError(f"{name} did not start")
                        res[name] = max(res.get(name, 0.0),
                                        load(cli, url, clients, args.seconds, size, counts))
                    finally:
                        stop_processes([proc], timeout=10)
                        time.sleep(0.2)
                ref = res["nginx"]
                print(f"http {args.size_mb} MB clients={clients:2d}: "
                      f"ours(sendfile) {res['ours-sendfile']:7.0f} MB/s ({res['ours-sendfile'] / ref:.2f}x)  "
                      f"ours(file_wrapper copy) {res['ours-copy']:7.0f} MB/s ({res['ours-copy'] / ref:.2f}x)  "
                      f"nginx {ref:7.0f} MB/s", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
