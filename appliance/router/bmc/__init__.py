"""Power control through a host's BMC: the driver interface (`driver.py`), IPMI over LAN
(`ipmi.py`, the `ipmitool` program), Redfish over HTTPS (`redfish.py`, `requests`), and the
actions the front ends and flows call, each an event (`power.py`)."""
