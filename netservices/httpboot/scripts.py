"""iPXE scripts rendered from data: pure functions, text out.

Everything that lands in a script from data (labels, names, kernel
parameters, query arguments) is checked here so no value can end a line or
expand an iPXE setting (`${...}`) and so inject script commands.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import cached_property

from ..backend import BootTarget, HostRecord

_HTTP_URL = re.compile(r"http://([A-Za-z0-9.-]+(?::[0-9]{1,5})?|\[[0-9a-fA-F:]+\](?::[0-9]{1,5})?)"
                       r"(/[A-Za-z0-9._~/-]*)?")
# a kernel parameter: printable, no whitespace, no iPXE expansion, no quotes
_PARAM = re.compile(r"[A-Za-z0-9_.,:/=+@%~\[\]-]+")
_STORE_BASENAME = re.compile(r"[0-9a-df-np-sv-z]{32}-[A-Za-z0-9+._?=-]{1,180}")


class UnsafeValue(ValueError):
    """A value that would change the script if it were written into it."""


@dataclass(frozen=True)
class BootSettings:
    base_url: str  # e.g. http://10.0.0.1:8081, no trailing slash
    menu: bool = True
    menu_timeout_seconds: int = 5
    cmdline: str | None = None  # boot.cmdline
    unknown_clients: str = "menu"  # menu | local | ignore
    retry_seconds: int = 10
    # the base URL for clients that reach us over IPv6 (http://[addr]:port); "": base_url
    base_url6: str = ""
    # networks whose clients may fetch scripts without a media token (the LAN, relayed
    # segments); empty: everyone may (a server with no notion of its LAN)
    local_nets: tuple[str, ...] = ()
    # the router's binary cache public key (`name:base64`), sent as `nixie.cache_key=` to
    # install and cached boots (NixOS trusts the cache with it); "": none made yet
    cache_key: str = ""

    @cached_property
    def local_networks(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        """`local_nets` parsed: once per settings, not once per request."""
        return tuple(ipaddress.ip_network(n) for n in self.local_nets)

    def for_client(self, client_ip: str) -> BootSettings:
        """These settings as a client at `client_ip` needs them: a host that booted over
        IPv6 gets every URL (scripts, kernel, initrd, `nixie.api`) in IPv6."""
        if self.base_url6 and ":" in client_ip and not client_ip.startswith("::ffff:"):
            return self._ipv6
        return self

    @cached_property
    def _ipv6(self) -> BootSettings:
        """These settings with `base_url6` for every URL: made once, not per request."""
        return replace(self, base_url=self.base_url6)


def safe_label(text: str, limit: int = 80) -> str:
    """Menu/echo text: keep letters, digits and a few marks; drop everything else."""
    out = re.sub(r"[^A-Za-z0-9 ._:()+,/#@=-]", "", text or "")
    return out[:limit].strip() or "-"


def check_params(params: Sequence[str], what: str = "kernel parameter") -> list[str]:
    out = []
    for p in params:
        if not _PARAM.fullmatch(p):
            raise UnsafeValue(f"{what} {p[:60]!r} has characters not allowed on a kernel line")
        out.append(p)
    return out


def split_args(text: str | None) -> list[str]:
    """cmdline_prefix_args / cmdline_suffix_args / boot.cmdline: space-separated, checked."""
    if not text:
        return []
    if "\n" in text or "\r" in text:
        raise UnsafeValue("kernel arguments must be one line")
    return check_params(text.split(), "argument")


def store_basename(toplevel: str) -> str:
    base = toplevel.rsplit("/", 1)[-1]
    if not toplevel.startswith("/nix/store/") or not _STORE_BASENAME.fullmatch(base) \
            or toplevel != "/nix/store/" + base:
        raise UnsafeValue(f"{toplevel[:100]!r} is not a store path")
    return base


def is_store_basename(text: str) -> bool:
    return bool(_STORE_BASENAME.fullmatch(text))


def boot_lines(target: BootTarget, s: BootSettings, *, token: str | None = None,
               extra: Sequence[str] = (), prefix: Sequence[str] = (),
               suffix: Sequence[str] = (), initrd: str = "initrd") -> list[str]:
    """`kernel`, `initrd`, `boot` for one target. UEFI needs `initrd=initrd` naming
    the initrd, so the initrd gets that name explicitly. `initrd="stage1"`: the system's
    stage-1 initrd alone (cached netboot fetches the closure itself)."""
    b = store_basename(target.toplevel)
    args = kernel_args(target, s, token=token, extra=extra, prefix=prefix, suffix=suffix)
    return [
        f"kernel {s.base_url}/boot/{b}/kernel {' '.join(args)}",
        f"initrd --name initrd {s.base_url}/boot/{b}/{initrd}",
        "boot",
    ]


def kernel_args(target: BootTarget, s: BootSettings, *, token: str | None = None,
                extra: Sequence[str] = (), prefix: Sequence[str] = (),
                suffix: Sequence[str] = ()) -> list[str]:
    """The kernel command line of one target, checked word by word."""
    args = ["initrd=initrd", f"init={target.toplevel}/init", *check_params(prefix),
            *check_params(target.kernel_params), *check_params(suffix),
            f"nixie.api={s.base_url}"]
    if token:
        args.append(f"nixie.token={check_params([token])[0]}")
    args += check_params(extra)
    args += split_args(s.cmdline)
    return args


def grub_device(base_url: str) -> tuple[str, str]:
    """GRUB's device and path prefix for an http base URL: `(http,host:port)`, path."""
    m = _HTTP_URL.fullmatch(base_url)
    if not m:
        raise UnsafeValue("GRUB boots only over http:// URLs")
    return f"(http,{m.group(1)})", m.group(2) or ""


def grub_script(target: BootTarget, s: BootSettings, *, title: str,
                token: str | None = None) -> str:
    """The GRUB EFI side of boot media (the packaged UEFI iPXE cannot run a script it
    is given): the same kernel, initrd and command line as `target_script`."""
    b = store_basename(target.toplevel)
    dev, path = grub_device(s.base_url)
    args = kernel_args(target, s, token=token)
    return "\n".join([
        f"echo 'Nixie: {safe_label(title)}: {safe_label(target.label)}'",
        f"linux {dev}{path}/boot/{b}/kernel {' '.join(args)}",
        f"initrd {dev}{path}/boot/{b}/initrd",
        "boot",
        "",
    ])


def grub_wait_script(message: str, self_path: str, seconds: int) -> str:
    """GRUB's retry: a message, a pause, the same script again."""
    return "\n".join([
        f"echo 'Nixie: {safe_label(message)}'",
        f"sleep {int(seconds)}",
        f"configfile {self_path}",
        "",
    ])


def _header(title: str) -> list[str]:
    return ["#!ipxe", f"echo Nixie: {safe_label(title)}"]


def retry_script(message: str, self_url: str, seconds: int) -> str:
    """What a client gets while its system is being built (or anything else that is
    not there yet): a message, a pause, and the same request again. Never an error."""
    return "\n".join([
        *_header(message),
        f"echo Retrying in {int(seconds)} seconds",
        f"sleep {int(seconds)}",
        f"chain --replace --autofree {self_url}",
        "",
    ])


def local_script(name: str) -> str:
    """Boot the local disk: UEFI returns to the firmware's boot order; BIOS sanboots
    the first disk (and returns to the BIOS if that fails). UEFI needs a non-zero exit:
    EDK2 firmware that sees a boot option return success stops at its setup menu
    instead of trying the next boot option (the disk)."""
    return "\n".join([
        *_header(f"{name}: booting from local disk"),
        "iseq ${platform} efi && exit 1 ||",
        "sanboot --no-describe --drive 0x80 || exit 0",
        "",
    ])


def unknown_menu_script(mac: str, self_url: str, timeout_seconds: int) -> str:
    """A machine with no host record: boot the local disk, or ask again later."""
    return "\n".join([
        "#!ipxe",
        f"menu Nixie: unknown machine {safe_label(mac)} (add it as a host to netboot it)",
        "item local Boot from local disk",
        "item retry Ask the router again",
        f"choose --timeout {max(1, timeout_seconds) * 1000} --default local selected || goto local",
        "goto ${selected}",
        ":local",
        "iseq ${platform} efi && exit 1 ||",
        "sanboot --no-describe --drive 0x80 || exit 0",
        ":retry",
        f"chain --replace --autofree {self_url}",
        "",
    ])


def cached_params(s: BootSettings) -> list[str]:
    """What a cached netboot's stage 1 reads from the kernel line: the mode and the
    router's cache (its key, for the NixOS path). The stage 1 derives the system from
    `init=` and fetches `<nixie.api>/boot/<system>/closure` and the paths it lacks."""
    return ["nixie.mode=cached", *cache_key_params(s)]


def cache_key_params(s: BootSettings) -> list[str]:
    return [f"nixie.cache_key={s.cache_key}"] if s.cache_key else []


def target_script(target: BootTarget, s: BootSettings, self_url: str, *, title: str,
                  token: str | None = None, extra: Sequence[str] = (),
                  prefix: Sequence[str] = (), suffix: Sequence[str] = (),
                  initrd: str = "initrd") -> str:
    """Boot one target straight away; on failure, wait and ask again."""
    lines = boot_lines(target, s, token=token, extra=extra, prefix=prefix, suffix=suffix,
                       initrd=initrd)
    return "\n".join([
        *_header(f"{title}: {target.label}"),
        *lines[:2],
        "boot || goto failed",
        ":failed",
        f"echo Boot failed; retrying in {s.retry_seconds} seconds",
        f"sleep {s.retry_seconds}",
        f"chain --replace --autofree {self_url}",
        "",
    ])


def default_target(targets: Sequence[BootTarget]) -> int:
    """Index of the entry a host boots by default: the one marked current (the
    admin's choice, e.g. after a rollback), else the first (newest)."""
    for i, t in enumerate(targets):
        if t.current:
            return i
    return 0


def menu_script(host: HostRecord, targets: Sequence[BootTarget], s: BootSettings,
                self_url: str, token_for: Callable[[BootTarget], str | None],
                extra: Sequence[str] = (), initrd: str = "initrd") -> str:
    """The host's generations, newest first; the default is the current one (the
    newest unless the admin chose another) and keys 0-9 pick one directly, so any
    other generation is one keypress away."""
    name = safe_label(host.name)
    d = default_target(targets)
    out = ["#!ipxe", f"menu Nixie: {name}", "item --gap Generations (newest first)"]
    for i, t in enumerate(targets):
        key = f"--key {i} " if i < 10 else ""
        suffix = " (current)" if i == d else ""
        out.append(f"item {key}gen{i} [{i}] {safe_label(t.label)}{suffix}")
    out += ["item --gap Other", "item --key l local [l] Boot from local disk",
            "item --key r retry [r] Reload this menu",
            f"choose --timeout {s.menu_timeout_seconds * 1000} --default gen{d} selected "
            f"|| goto gen{d}",
            "goto ${selected}"]
    for i, t in enumerate(targets):
        kernel, initrd_line, _ = boot_lines(t, s, token=token_for(t), extra=extra, initrd=initrd)
        out += [f":gen{i}", f"echo Booting {name}: {safe_label(t.label)}", kernel, initrd_line,
                "boot || goto failed"]
    out += [":local", "iseq ${platform} efi && exit 1 ||",
            "sanboot --no-describe --drive 0x80 || exit 0",
            ":retry", f"chain --replace --autofree {self_url}",
            ":failed", f"echo Boot failed; retrying in {s.retry_seconds} seconds",
            f"sleep {s.retry_seconds}", f"chain --replace --autofree {self_url}", ""]
    return "\n".join(out)
