"""Network services: DHCP, TFTP, DNS and HTTP boot.

Each protocol is its own package with a pure codec, plain policy functions
and a thin server loop. Servers get what they need from the appliance through
the interfaces in `netservices.backend`, passed into their factories by
`appliance.runtime.serve`; nothing here imports `appliance` or `webui`.
"""
