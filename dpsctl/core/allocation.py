"""Built-in DPS allocation policies (hashed, geoLatency, static) as pure functions over candidate hubs."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass

from dpsctl.core.errors import AllocationFailed, InvalidInput
from dpsctl.core.regions import distance_km, normalize_region

MIN_WEIGHT = 1
MAX_WEIGHT = 1000

# Distances closer than this count as equal: hubs in the same region (or in regions that share a
# city, like australiacentral/australiacentral2) must tie even if float rounding differs slightly.
_TIE_KM = 1e-6

# 52 random bits keep (n + 0.5) / 2**52 exactly representable, so u is never 0 or 1 and ln(u) < 0.
_UNIT_BITS = 52


@dataclass(frozen=True)
class HubChoice:
    """A candidate IoT hub: host name, allocation weight (1-1000) and optional ARM region."""

    host_name: str
    weight: int = 1
    location: str | None = None

    def __post_init__(self) -> None:
        if not self.host_name:
            raise InvalidInput("a linked hub needs a host name")
        # bool is an int subclass; True as a weight is almost certainly a mix-up with applyAllocationPolicy.
        if isinstance(self.weight, bool) or not isinstance(self.weight, int):
            raise InvalidInput(f"allocation weight of hub '{self.host_name}' must be a whole number")
        if not MIN_WEIGHT <= self.weight <= MAX_WEIGHT:
            raise InvalidInput(
                f"allocation weight of hub '{self.host_name}' is {self.weight}",
                hint=f"weights go from {MIN_WEIGHT} to {MAX_WEIGHT}",
            )


def hashed(registration_id: str, hubs: Sequence[HubChoice]) -> str:
    """Pick a hub by weighted rendezvous hashing, so a device keeps its hub while the hub set is stable.

    Each hub scores -weight / ln(u), u in (0, 1) derived from SHA-256 of the lower-cased
    registration ID and host name; the highest score wins (ties: alphabetically first host name).
    A hub's chance is weight / total weight, and adding or removing a hub only moves the devices
    that go to, or came from, that hub.
    """
    _require_candidates(hubs, "hashed")
    return min(hubs, key=lambda hub: (-_rendezvous_score(registration_id, hub), *_name_order(hub))).host_name


def geo_latency(registration_id: str, hubs: Sequence[HubChoice], device_region: str) -> str:
    """Pick the hub whose region is nearest the device's region; equally near hubs are split by hashed().

    Hubs without a location are treated as infinitely far: they are only considered when no
    candidate has a location, in which case this is plain hashed(). A device or hub region
    that is not in the region table raises InvalidInput.
    """
    _require_candidates(hubs, "geoLatency")
    origin = normalize_region(device_region)
    distances = [(distance_km(origin, hub.location), hub) for hub in hubs if hub.location is not None]
    if not distances:
        return hashed(registration_id, hubs)
    nearest = min(distance for distance, _ in distances)
    tied = [hub for distance, hub in distances if distance - nearest <= _TIE_KM]
    return hashed(registration_id, tied)


def static(hubs: Sequence[HubChoice]) -> str:
    """Return the single hub a static enrollment names; anything but exactly one is an error."""
    if len(hubs) != 1:
        names = ", ".join(hub.host_name for hub in hubs) or "none"
        raise AllocationFailed(
            f"static allocation needs exactly one IoT hub, but {len(hubs)} are candidates ({names})",
            hint="name exactly one hub on the enrollment when its allocation policy is static",
        )
    return hubs[0].host_name


def _require_candidates(hubs: Sequence[HubChoice], policy: str) -> None:
    if not hubs:
        raise AllocationFailed(
            f"{policy} allocation has no IoT hub to choose from",
            hint="link a hub to the provisioning service, or check the enrollment's iotHubs and applyAllocationPolicy",
        )


def _rendezvous_score(registration_id: str, hub: HubChoice) -> float:
    return -hub.weight / math.log(_unit_interval(registration_id, hub.host_name))


def _unit_interval(registration_id: str, host_name: str) -> float:
    # Registration IDs and host names are case-insensitive in DPS, so case must not move a device.
    seed = f"{registration_id.lower()}\n{host_name.lower()}".encode()
    bits = int.from_bytes(hashlib.sha256(seed).digest()[:8], "big") >> (64 - _UNIT_BITS)
    return (bits + 0.5) / (1 << _UNIT_BITS)


def _name_order(hub: HubChoice) -> tuple[str, str, int]:
    # The full tuple keeps the result independent of list order even for odd duplicates.
    return hub.host_name.lower(), hub.host_name, hub.weight
