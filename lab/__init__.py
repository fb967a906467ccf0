"""The lab: network namespaces, QEMU PXE VMs and the lab flake. Used by `make run`
(`python -m lab up`), the tests and the benches; never by the product, and not in
the wheel or the router image."""
