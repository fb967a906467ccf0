"""Pure helpers of the boot benchmark: logs and events in, boot-step times out.

Every time is wall-clock seconds (time.time()); a step is reported relative to
the VM's power-on. No sockets, no processes: the unit tier tests these.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from statistics import median

# the serial-console lines we timestamp as they appear (both stacks, same poller)
CONSOLE_MARKERS = ("NIXIE-STAGE1", "NIXIE-STAGE2", "NIXIE-REPORTED")
# the server-side steps, in boot order; "booted" is the agent's POST arriving
# dhcp: the firmware's first DHCPACK on the wire; tftp: the first TFTP read
# request (UEFI: snponly.efi); lease2: the last DHCPACK (stage 2's udhcpc)
STEPS = ("dhcp", "tftp", "script", "kernel", "initrd", "stage1", "stage2", "lease2", "booted")

# log_format of the reference nginx: "$msec $request_method $uri $status $body_bytes_sent"
NGINX_LOG_FORMAT = "$msec $request_method $uri $status $body_bytes_sent"
_NGINX_LINE = re.compile(r"^(\d+\.\d+) ([A-Z]+) (\S+) (\d{3}) (\d+)$")


@dataclass(frozen=True)
class Request:
    ts: float  # when nginx finished the request ($msec)
    method: str
    uri: str
    status: int
    sent: int


def parse_nginx_log(text: str) -> list[Request]:
    """Lines written with NGINX_LOG_FORMAT; other lines are skipped."""
    out = []
    for line in text.splitlines():
        m = _NGINX_LINE.match(line.strip())
        if m:
            out.append(Request(float(m[1]), m[2], m[3], int(m[4]), int(m[5])))
    return out


_TS_LINE = re.compile(r"^(\d+\.\d+) IP ")
_DHCP_TYPE = re.compile(r"DHCP-Message \(53\), length 1: (\w+)")
_TFTP_RRQ = re.compile(r"TFTP, length \d+, RRQ ")


def parse_tcpdump(text: str) -> list[tuple[float, str]]:
    """`tcpdump -tt -v` output -> [(time, kind)]: DHCP packets by message type
    ("DISCOVER", "ACK", ...) and TFTP read requests ("TFTP-RRQ"); the rest is skipped."""
    out, ts = [], None
    for line in text.splitlines():
        m = _TS_LINE.match(line)
        if m:
            ts = float(m[1])
            continue
        if ts is None:
            continue
        m = _DHCP_TYPE.search(line)
        if m:
            out.append((ts, m[1].upper()))
            ts = None
        elif _TFTP_RRQ.search(line):
            out.append((ts, "TFTP-RRQ"))
            ts = None
    return out


def wire_steps(pkts: list[tuple[float, str]], power_on: float) -> dict[str, float | None]:
    """The firmware's lease (first ACK after power-on), the first TFTP read, and
    stage 2's lease (the last ACK, when there is more than one)."""
    acks = sorted(t for t, kind in pkts if kind == "ACK" and t >= power_on)
    rrqs = sorted(t for t, kind in pkts if kind == "TFTP-RRQ" and t >= power_on)
    return {"dhcp": acks[0] if acks else None, "tftp": rrqs[0] if rrqs else None,
            "lease2": acks[-1] if len(acks) > 1 else None}


class FirstSeen:
    """Feed it a growing text with the time you read it; it keeps, for each
    pattern, the first time a line matching it was there (and how many)."""

    def __init__(self, patterns: dict[str, str]):
        self.patterns = {k: re.compile(v) for k, v in patterns.items()}
        self.first: dict[str, float] = {}
        self.counts: dict[str, int] = {}
        self.last: dict[str, float] = {}

    def feed(self, text: str, ts: float) -> None:
        for name, rx in self.patterns.items():
            n = len(rx.findall(text))
            if n and name not in self.first:
                self.first[name] = ts
            if n > self.counts.get(name, 0):
                self.last[name] = ts
                self.counts[name] = n


@dataclass
class BootTimes:
    """One boot: power-on wall time and each step's wall time (None: not seen)."""

    stack: str
    power_on: float
    steps: dict[str, float | None] = field(default_factory=dict)
    firmware: str = "bios"

    def rel(self, step: str) -> float | None:
        t = self.steps.get(step)
        return None if t is None else t - self.power_on

    @property
    def total(self) -> float | None:
        return self.rel("booted")


def reference_steps(requests: list[Request], power_on: float,
                    basename: str) -> dict[str, float | None]:
    """Steps of a reference boot from nginx's completed requests: the script, the
    kernel, the initrd, and the agent's POST."""
    after = [r for r in requests if r.ts >= power_on and r.status < 400]

    def first(pred) -> float | None:
        return next((r.ts for r in after if pred(r)), None)

    return {
        "script": first(lambda r: r.method == "GET" and r.uri.endswith(".ipxe")),
        "kernel": first(lambda r: r.uri == f"/boot/{basename}/kernel"),
        "initrd": first(lambda r: r.uri == f"/boot/{basename}/initrd"),
        "booted": first(lambda r: r.method == "POST" and r.uri == "/api/v1/agent/events"),
    }


def appliance_steps(events: list[dict], power_on: float) -> dict[str, float | None]:
    """Steps of a boot through the appliance, from its host events: `boot.script`,
    the completed `boot.kernel` / `boot.initrd`, `host.booted`."""
    evs = sorted((e for e in events if float(e["ts"]) >= power_on), key=lambda e: float(e["ts"]))

    def first(kind: str, completed: bool = False) -> float | None:
        for e in evs:
            if e["kind"] != kind:
                continue
            if completed and (e.get("data") or {}).get("status") != "completed":
                continue
            return float(e["ts"])
        return None

    return {"script": first("boot.script"),
            "kernel": first("boot.kernel", completed=True),
            "initrd": first("boot.initrd", completed=True), "booted": first("host.booted")}


def median_or_none(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return median(vals) if vals else None


def ratio(ours: float | None, reference: float | None) -> float | None:
    if ours is None or not reference:
        return None
    return ours / reference


def cell(value: float | None, width: int, decimals: int = 2, sign: str = "") -> str:
    """`value` right-aligned in `width` columns (`sign` "+": always signed), or `-` where
    there is none."""
    return f"{value:>{sign}{width}.{decimals}f}" if value is not None else f"{'-':>{width}}"


def step_table(boots: list[BootTimes]) -> str:
    """Median time of each step since power-on, per stack, with ours/each other stack
    (one column `ratio` beside one reference; `/<stack>` per stack beside several)."""
    stacks = sorted({b.stack for b in boots}, key=lambda s: (s != "ours", s))
    others = stacks[1:] if stacks[:1] == ["ours"] else []
    cols = ["ratio"] if len(others) == 1 else [f"/{s}" for s in others]
    widths = [max(12, len(s) + 1) for s in stacks]
    col_widths = [max(9, len(c) + 1) for c in cols]
    head = f"{'step (s since power-on)':<26}" + "".join(
        f"{s:>{w}}" for s, w in zip(stacks + cols, widths + col_widths, strict=True))
    lines = [head, "-" * len(head)]
    for step in STEPS:
        meds = [median_or_none([b.rel(step) for b in boots if b.stack == s]) for s in stacks]
        if all(m is None for m in meds):
            continue
        ratios = [ratio(meds[0], m) for m in meds[1:len(cols) + 1]]
        lines.append(f"{step:<26}" + "".join(cell(m, w) for m, w in zip(meds, widths, strict=True))
                     + "".join(cell(r, w, 3) for r, w in zip(ratios, col_widths, strict=True)))
    return "\n".join(lines)


# spans between steps: who is waiting on whom
PHASES = (
    ("power-on -> firmware lease", None, "dhcp"),
    ("lease -> script (iPXE)", "dhcp", "script"),
    ("script -> initrd sent", "script", "initrd"),
    ("initrd -> stage 1 (kernel)", "initrd", "stage1"),
    ("stage 1 -> booted", "stage1", "booted"),
)


def phase(b: BootTimes, start: str | None, end: str) -> float | None:
    t1 = b.steps.get(end)
    t0 = b.power_on if start is None else b.steps.get(start)
    return None if t0 is None or t1 is None else t1 - t0


def phase_table(boots: list[BootTimes], reference: str = "reference") -> str:
    """Median duration of each phase, ours and `reference`: which part of the boot differs."""
    stacks = ("ours", reference)
    head = f"{'phase (s)':<30}" + "".join(f"{s:>13}" for s in stacks) + f"{'diff':>9}"
    lines = [head, "-" * len(head)]
    for label, a, z in PHASES:
        meds = [median_or_none([phase(b, a, z) for b in boots if b.stack == s]) for s in stacks]
        if all(m is None for m in meds):
            continue
        diff = meds[0] - meds[1] if None not in meds else None
        lines.append(f"{label:<30}" + "".join(cell(m, 13) for m in meds) + cell(diff, 9, sign="+"))
    return "\n".join(lines)


def parse_event_data(e: dict) -> dict:
    """`nixie host show --json` gives `data` as a JSON string or an object."""
    import json

    d = e.get("data")
    if isinstance(d, str):
        try:
            d = json.loads(d)
        except ValueError:
            d = None
    return {**e, "data": d if isinstance(d, dict) else {}}
