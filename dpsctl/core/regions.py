"""Public Azure regions and the distances between them, for geoLatency allocation."""

from __future__ import annotations

import difflib
import math
import re
from typing import NamedTuple

from dpsctl.core.errors import InvalidInput


class Coordinates(NamedTuple):
    """Approximate latitude/longitude (degrees) of a region's datacentre city."""

    latitude: float
    longitude: float


# Public-cloud regions only (no sovereign clouds): the emulator needs a plausible
# geography, not survey-grade positions, so city centres are good enough.
_REGIONS: dict[str, Coordinates] = {
    # Americas
    "eastus": Coordinates(37.3719, -79.8164),  # Virginia
    "eastus2": Coordinates(36.6681, -78.3889),  # Virginia
    "centralus": Coordinates(41.5908, -93.6208),  # Iowa
    "northcentralus": Coordinates(41.8819, -87.6278),  # Illinois
    "southcentralus": Coordinates(29.4167, -98.5000),  # Texas
    "westcentralus": Coordinates(40.8900, -110.2340),  # Wyoming
    "westus": Coordinates(37.7830, -122.4170),  # California
    "westus2": Coordinates(47.2330, -119.8520),  # Washington
    "westus3": Coordinates(33.4484, -112.0740),  # Arizona
    "canadacentral": Coordinates(43.6530, -79.3830),  # Toronto
    "canadaeast": Coordinates(46.8170, -71.2170),  # Quebec City
    "mexicocentral": Coordinates(20.5888, -100.3899),  # Querétaro
    "brazilsouth": Coordinates(-23.5500, -46.6330),  # São Paulo
    "brazilsoutheast": Coordinates(-22.9028, -43.2075),  # Rio de Janeiro
    "chilecentral": Coordinates(-33.4489, -70.6693),  # Santiago
    # Europe
    "northeurope": Coordinates(53.3478, -6.2597),  # Dublin
    "westeurope": Coordinates(52.3667, 4.9000),  # Amsterdam
    "uksouth": Coordinates(51.5074, -0.1278),  # London
    "ukwest": Coordinates(51.4816, -3.1791),  # Cardiff
    "francecentral": Coordinates(48.8566, 2.3522),  # Paris
    "francesouth": Coordinates(43.2965, 5.3698),  # Marseille
    "germanywestcentral": Coordinates(50.1109, 8.6821),  # Frankfurt
    "germanynorth": Coordinates(52.5200, 13.4050),  # Berlin
    "switzerlandnorth": Coordinates(47.3769, 8.5417),  # Zürich
    "switzerlandwest": Coordinates(46.2044, 6.1432),  # Geneva
    "norwayeast": Coordinates(59.9139, 10.7522),  # Oslo
    "norwaywest": Coordinates(58.9700, 5.7331),  # Stavanger
    "swedencentral": Coordinates(60.6749, 17.1413),  # Gävle
    "swedensouth": Coordinates(55.6059, 13.0007),  # Malmö
    "polandcentral": Coordinates(52.2297, 21.0122),  # Warsaw
    "italynorth": Coordinates(45.4642, 9.1900),  # Milan
    "spaincentral": Coordinates(40.4168, -3.7038),  # Madrid
    # Middle East and Africa
    "uaenorth": Coordinates(25.2048, 55.2708),  # Dubai
    "uaecentral": Coordinates(24.4539, 54.3773),  # Abu Dhabi
    "qatarcentral": Coordinates(25.2854, 51.5310),  # Doha
    "israelcentral": Coordinates(32.0853, 34.7818),  # Tel Aviv area
    "southafricanorth": Coordinates(-26.2041, 28.0473),  # Johannesburg
    "southafricawest": Coordinates(-33.9249, 18.4241),  # Cape Town
    # Asia Pacific
    "eastasia": Coordinates(22.3193, 114.1694),  # Hong Kong
    "southeastasia": Coordinates(1.3521, 103.8198),  # Singapore
    "japaneast": Coordinates(35.6762, 139.6503),  # Tokyo
    "japanwest": Coordinates(34.6937, 135.5023),  # Osaka
    "koreacentral": Coordinates(37.5665, 126.9780),  # Seoul
    "koreasouth": Coordinates(35.1796, 129.0756),  # Busan
    "centralindia": Coordinates(18.5204, 73.8567),  # Pune
    "southindia": Coordinates(13.0827, 80.2707),  # Chennai
    "westindia": Coordinates(19.0760, 72.8777),  # Mumbai
    "jioindiawest": Coordinates(22.4707, 70.0577),  # Jamnagar
    "jioindiacentral": Coordinates(21.1458, 79.0882),  # Nagpur
    "indonesiacentral": Coordinates(-6.2088, 106.8456),  # Jakarta
    "malaysiawest": Coordinates(3.1390, 101.6869),  # Kuala Lumpur
    "australiaeast": Coordinates(-33.8688, 151.2093),  # Sydney
    "australiasoutheast": Coordinates(-37.8136, 144.9631),  # Melbourne
    "australiacentral": Coordinates(-35.2809, 149.1300),  # Canberra
    "australiacentral2": Coordinates(-35.2809, 149.1300),  # Canberra
    "newzealandnorth": Coordinates(-36.8485, 174.7633),  # Auckland
}

# Mean Earth radius (IUGG); the spherical model is far more precise than the table.
_EARTH_RADIUS_KM = 6371.0088

# Display names ("East US 2") and common typing variants ("west-europe") map to ARM names.
_IGNORED = re.compile(r"[\s_-]+")


def known_regions() -> list[str]:
    """ARM names of every region in the built-in table, sorted."""
    return sorted(_REGIONS)


def normalize_region(name: str) -> str:
    """Turn a region name or display name ("East US") into its ARM name ("eastus")."""
    key = _IGNORED.sub("", name).lower()
    if key in _REGIONS:
        return key
    raise InvalidInput(f"unknown Azure region '{name}'", hint=_unknown_region_hint(key))


def coordinates(name: str) -> Coordinates:
    """Approximate datacentre coordinates of a region (any spelling normalize_region accepts)."""
    return _REGIONS[normalize_region(name)]


def distance_km(a: str, b: str) -> float:
    """Great-circle distance in kilometres between the datacentres of two regions."""
    return _haversine_km(coordinates(a), coordinates(b))


def _haversine_km(p: Coordinates, q: Coordinates) -> float:
    lat1, lon1, lat2, lon2 = map(math.radians, (p.latitude, p.longitude, q.latitude, q.longitude))
    h = math.sin((lat2 - lat1) / 2) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    # Rounding can push h a hair above 1 for near-antipodal points; asin would then raise.
    return 2 * _EARTH_RADIUS_KM * math.asin(math.sqrt(min(1.0, h)))


def _unknown_region_hint(key: str) -> str:
    close = difflib.get_close_matches(key, _REGIONS, n=3)
    suggestion = f"did you mean {', '.join(close)}? " if close else ""
    return f"{suggestion}known regions: {', '.join(known_regions())}"
