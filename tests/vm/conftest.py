"""What the VM tests share: the appliance serving a lab LAN in its own namespace."""

from __future__ import annotations

import pytest

from tests.vm.pxe_lab import appliance_serving


@pytest.fixture
def appliance(tmp_path):
    """(namespace, config path, config dict, tmp dir) of a running `nixie serve`."""
    with appliance_serving(tmp_path) as (ns, path, cfg):
        yield ns, path, cfg, tmp_path
