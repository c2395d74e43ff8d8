"""Values the tests agree on: the ID scope of every test store, hub host names, API versions."""

from __future__ import annotations

ID_SCOPE = "0ne00000A0A"
HUB_A = "hub-a.azure-devices.net"
HUB_B = "hub-b.azure-devices.net"
HUB_C = "hub-c.azure-devices.net"
SERVICE_API = "2021-10-01"
DEVICE_API = "2019-03-31"
