"""The real Chromium (/usr/bin/chromium) under Playwright, for the tests that use the web UI
as an admin would: headless, on the host or inside a lab namespace (where it reaches the
appliance's LAN addresses). Screenshots go to test-artifacts/screenshots/."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from lab.netns import Netns
from tests.conftest import ROOT

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
SHOTS = ROOT / "test-artifacts" / "screenshots"


def launch(pw, ns: Netns | None = None, tmp: Path | None = None):
    """Chromium started by the Playwright `pw`; with `ns`, running inside that namespace
    (through a wrapper script written in `tmp`)."""
    executable = CHROMIUM
    if ns is not None:
        wrapper = tmp / f"chromium-in-{ns.name}"
        wrapper.write_text(f'#!/bin/sh\nexec ip netns exec {ns.name} {CHROMIUM} "$@"\n')
        wrapper.chmod(0o755)
        executable = str(wrapper)
    return pw.chromium.launch(executable_path=executable, args=ARGS)


@contextmanager
def chromium_page(base_url: str, ns: Netns | None = None, tmp: Path | None = None
                  ) -> Iterator:
    """A page of a Chromium of its own (see `launch`), relative URLs under `base_url`;
    the browser is closed when the block ends."""
    from playwright.sync_api import sync_playwright  # the browser tier says when it is missing

    with sync_playwright() as pw:
        browser = launch(pw, ns, tmp)
        try:
            # ignore_https_errors: the appliance's own self-signed certificate
            page = browser.new_context(base_url=base_url, viewport={"width": 1360, "height": 900},
                                       ignore_https_errors=True).new_page()
            page.set_default_timeout(20_000)
            yield page
        finally:
            browser.close()


def shot(page, name: str) -> None:
    """A full-page screenshot, test-artifacts/screenshots/NAME.png."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)
