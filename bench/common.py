"""What the benchmarks share: a server and a client namespace on one veth link, and
`clients` curl loops driven from the client side for a fixed time."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from lab.netns import Netns, veth


@contextmanager
def server_and_client(server_ip: str, client_ip: str, prefix: int = 24
                      ) -> Iterator[tuple[Netns, Netns]]:
    """Two namespaces joined by `eth0` on each side, addressed; both closed at the end."""
    srv, cli = Netns(), Netns()
    try:
        veth(srv, "eth0", cli, "eth0")
        srv.run("ip", "addr", "add", f"{server_ip}/{prefix}", "dev", "eth0")
        cli.run("ip", "addr", "add", f"{client_ip}/{prefix}", "dev", "eth0")
        yield srv, cli
    finally:
        srv.close()
        cli.close()


def fetch_loops(client: Netns, clients: int, seconds: float, fetch: str, out: Path,
                grace: float) -> tuple[int, float]:
    """`clients` shell loops each run `fetch` (a shell command; `$i` is the loop's
    number) again and again for ~`seconds`; returns (fetches done, seconds taken).

    All the loops run in one session (one command), so with the kernel's autogroup
    scheduling the load generator counts as one tenant next to the server under
    test, as remote machines would, instead of many that starve it. A failed fetch
    fails the whole run with RuntimeError."""
    loop = (f'end=$(( $(date +%s%N) + {int(seconds * 1e9)} )); n=0; '
            f'while [ $(date +%s%N) -lt $end ]; do '
            f'{fetch} || exit 1; n=$((n+1)); done; echo $n > {out}/n$i')
    driver = (f'for i in $(seq 0 {clients - 1}); do ( {loop} ) & done; '
              'ok=0; for j in $(jobs -p); do wait $j || ok=1; done; exit $ok')
    for old in out.glob("n*"):
        old.unlink()
    t0 = time.monotonic()
    r = client.run("sh", "-c", driver, timeout=seconds + grace, check=False)
    took = time.monotonic() - t0
    if r.returncode:
        raise RuntimeError(f"a client failed: {fetch}")
    return sum(int((out / f"n{i}").read_text()) for i in range(clients)), took
