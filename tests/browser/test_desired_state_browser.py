"""What the admin sets in the browser is what runs, without restarting anything.

A fresh appliance (`nixie serve` in the router's namespace: DHCP on lan0, HTTP boot,
the web UI, a local build worker on the real `nix`); the real Chromium runs in that
namespace and real DHCP clients (busybox udhcpc, each on a macvlan with a MAC of its
own) and boot-script fetches come from a client namespace on the same LAN. The setup
wizard's DHCP range is the one clients get; a range changed in Settings is applied
live (the page says so): new clients get the new range while an existing lease
survives, the DHCP service is never restarted and serve keeps its pid; the boot menu
timeout and kernel parameters changed in Settings are in the next boot script."""

from __future__ import annotations

import re
import uuid
from types import SimpleNamespace

import pytest

from lab import flake as labflake
from tests.browser.chromium import chromium_page, shot
from tests.golden import assert_golden
from tests.netns.desired_lab import (
    BOOT,
    WEB,
    add_client,
    appliance_lan,
    fresh_status,
    request,
    udhcpc_lease,
    wait_for,
)
from tests.netns.dhcp_lab import in_range
from tests.vm.pxe_lab import add_and_build

PASSWORD = "desired-state-pw-1"
FILE_RANGE = ("10.77.0.100", "10.77.0.119")  # the config file's: no client may get one
WIZARD_RANGE = ("10.77.0.120", "10.77.0.139")
SETTINGS_RANGE = ("10.77.0.130", "10.77.0.149")
KEPT_IP = "10.77.0.135"  # in both ranges: its lease survives the change
UNKNOWN_MAC = "52:54:00:de:5e:99"
HOST_MAC = "52:54:00:de:5e:01"
CMDLINE = "console=ttyS1 nixie.desired=1"


@pytest.fixture(scope="module")
def appliance(tmp_path_factory):
    """serve on a fresh state (its pid and when its DHCP service started), and a
    client namespace that reaches HTTP boot (eth0 has an address outside every range)."""
    tmp = tmp_path_factory.mktemp("desired-browser")
    lan = appliance_lan(tmp, FILE_RANGE)
    try:
        lan.client.run("ip", "addr", "add", "10.77.0.50/24", "dev", "eth0")
        lan.start()
        wait_for("the web UI", lambda: request(lan.router, "GET", WEB + "/healthz")[0] == 200)
        status = fresh_status(lan)
        assert status["pid"] == lan.proc.pid
        yield SimpleNamespace(lan=lan, pid=lan.proc.pid,
                              dhcp_started_at=status["services"]["dhcp"]["started_at"])
    finally:
        lan.close()


@pytest.fixture(scope="module")
def page(appliance):
    """Chromium in the router's namespace (it reaches the web UI on the LAN address)."""
    with chromium_page(WEB, appliance.lan.router, appliance.lan.tmp) as p:
        yield p


def save_settings(page, fields: dict[str, str]) -> str:
    """Fill the Settings form and save it; the message the page shows, which must be
    a success (the page waits for serve to apply the change)."""
    page.goto("/settings/")
    for selector, value in fields.items():
        page.fill(selector, value)
    page.click("button:has-text('Save settings')")
    page.wait_for_selector(".flash")
    assert page.locator(".flash").count() == 1
    assert "flash-ok" in page.get_attribute(".flash", "class"), page.inner_text(".flash")
    return page.inner_text(".flash")


def assert_never_restarted(appliance) -> None:
    """serve kept its pid, and its DHCP service is the one that started with it."""
    status = fresh_status(appliance.lan)
    dhcp = status["services"]["dhcp"]
    assert (status["pid"], dhcp["restarts"], dhcp["started_at"]) == (
        appliance.pid, 0, appliance.dhcp_started_at), status


def boot_script(lan, mac: str) -> str:
    status, text = request(lan.client, "GET", f"{BOOT}/boot/{mac}.ipxe")
    assert status == 200, text
    return text


def kernel_lines(script: str) -> list[list[str]]:
    return [ln.split() for ln in script.splitlines() if ln.startswith("kernel ")]


def test_dhcp_range_from_the_wizard_then_settings_is_what_clients_get(appliance, page):
    lan = appliance.lan
    page.goto("/")
    assert page.url.endswith("/setup")
    # the one-time setup code, from where the admin reads it on the router (0600)
    page.fill("#setup_code", (lan.tmp / "state" / "setup_code").read_text().strip())
    page.fill("#username", "admin")
    page.fill("#password", PASSWORD)
    page.fill("#password2", PASSWORD)
    page.fill("#lan_interface", "lan0")
    page.select_option("#dhcp_mode", "authoritative")
    page.fill("#dhcp_first", WIZARD_RANGE[0])
    page.fill("#dhcp_last", WIZARD_RANGE[1])
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r"/\?welcome=1$"))

    def applied_in_events() -> bool:
        page.goto("/events/?kind=settings.*")
        return "settings.applied" in page.inner_text("#events-table")

    wait_for("the wizard's answers to be applied", applied_in_events, timeout=10, every=0.5)
    shot(page, "desired-01-wizard-applied")

    add_client(lan, "mv1")
    assert udhcpc_lease(lan, "mv1", KEPT_IP) == KEPT_IP
    kept = lan.leases()[KEPT_IP]
    add_client(lan, "mv2")
    assert in_range(udhcpc_lease(lan, "mv2"), *WIZARD_RANGE)

    flash = save_settings(page, {"#dhcp_first": SETTINGS_RANGE[0],
                                 "#dhcp_last": SETTINGS_RANGE[1]})
    assert flash == "Saved and applied to the running services: dhcp."
    assert page.input_value("#dhcp_first") == SETTINGS_RANGE[0]
    shot(page, "desired-02-settings-applied")

    add_client(lan, "mv3")  # a new client: the next free address is of the new range
    assert in_range(udhcpc_lease(lan, "mv3"), *SETTINGS_RANGE)
    assert udhcpc_lease(lan, "mv1", KEPT_IP) == KEPT_IP  # the first client asks again
    renewed = lan.leases()[KEPT_IP]
    assert (renewed["mac"], renewed["starts"]) == (kept["mac"], kept["starts"])  # the same lease
    assert renewed["expires"] > kept["expires"]

    assert_never_restarted(appliance)


def test_boot_menu_timeout_and_kernel_parameters_reach_the_next_boot_script(appliance, page):
    lan = appliance.lan
    flake = labflake.materialise(lan.tmp / "flake", release=f"desired-browser {uuid.uuid4()}")
    add_and_build(lan.config, flake, {"demo": HOST_MAC})
    assert_golden("unknown-machine-menu-5s.ipxe", boot_script(lan, UNKNOWN_MAC))  # the file's 5 s
    host_before = wait_for("the host's boot menu (its initrd is made on first request)",
                           lambda: kernel_lines(boot_script(lan, HOST_MAC)), timeout=120, every=1)
    assert [ln[-1].startswith("nixie.token=") for ln in host_before] == [True], host_before

    flash = save_settings(page, {"#boot_menu_timeout_seconds": "7", "#boot_cmdline": CMDLINE})
    assert flash.startswith("Saved and applied to the running services: ") and "httpboot" in flash, flash
    shot(page, "desired-03-boot-settings-applied")

    assert_golden("unknown-machine-menu-7s.ipxe", boot_script(lan, UNKNOWN_MAC))
    host_after = boot_script(lan, HOST_MAC)
    assert "choose --timeout 7000 --default gen0 selected || goto gen0" in host_after.splitlines()
    [kernel] = kernel_lines(host_after)
    assert kernel[-3].startswith("nixie.token=") and kernel[-2:] == CMDLINE.split(), kernel
    assert_never_restarted(appliance)

