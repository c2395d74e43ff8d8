"""The built-in Azure region table: name normalisation and great-circle distances."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dpsctl.core.errors import InvalidInput
from dpsctl.core.regions import distance_km, known_regions, normalize_region

regions = st.sampled_from(known_regions())
HALF_EARTH_CIRCUMFERENCE_KM = math.pi * 6371.0088


@pytest.mark.parametrize(
    ("typed", "arm_name"),
    [
        ("eastus", "eastus"),
        ("East US", "eastus"),
        ("East US 2", "eastus2"),
        ("  WEST europe ", "westeurope"),
        ("west-europe", "westeurope"),
        ("Germany West Central", "germanywestcentral"),
        ("NewZealandNorth", "newzealandnorth"),
    ],
)
def test_display_names_and_spacing_normalise_to_the_arm_name(typed: str, arm_name: str) -> None:
    assert normalize_region(typed) == arm_name


def test_the_table_covers_the_main_public_regions() -> None:
    expected = {
        "eastus", "eastus2", "westus", "westus2", "westus3", "centralus", "northcentralus", "southcentralus",
        "westcentralus", "canadacentral", "canadaeast", "brazilsouth", "northeurope", "westeurope", "uksouth",
        "ukwest", "francecentral", "germanywestcentral", "switzerlandnorth", "norwayeast", "swedencentral",
        "polandcentral", "italynorth", "spaincentral", "eastasia", "southeastasia", "japaneast", "japanwest",
        "koreacentral", "koreasouth", "australiaeast", "australiasoutheast", "australiacentral", "centralindia",
        "southindia", "westindia", "uaenorth", "southafricanorth", "qatarcentral", "israelcentral",
        "mexicocentral", "newzealandnorth",
    }  # fmt: skip
    assert expected <= set(known_regions())


def test_known_regions_are_sorted_unique_arm_names() -> None:
    names = known_regions()
    assert names == sorted(set(names))
    assert all(name == name.lower() and " " not in name for name in names)


def test_an_unknown_region_is_invalid_input_listing_the_known_names() -> None:
    with pytest.raises(InvalidInput) as caught:
        normalize_region("Atlantis North")
    assert "Atlantis North" in caught.value.message
    assert caught.value.hint is not None
    assert all(name in caught.value.hint for name in known_regions())


def test_a_near_miss_gets_a_suggestion() -> None:
    with pytest.raises(InvalidInput) as caught:
        normalize_region("westeurop")
    assert caught.value.hint is not None
    assert caught.value.hint.startswith("did you mean westeurope")


def test_distance_rejects_unknown_regions() -> None:
    with pytest.raises(InvalidInput):
        distance_km("westeurope", "mars")


@pytest.mark.parametrize(
    ("a", "b", "published_km"),
    [
        ("uksouth", "westeurope", 357),  # London - Amsterdam
        ("northeurope", "westeurope", 757),  # Dublin - Amsterdam
        ("japaneast", "brazilsouth", 18_530),  # Tokyo - São Paulo
    ],
)
def test_distances_match_published_city_distances(a: str, b: str, published_km: float) -> None:
    assert distance_km(a, b) == pytest.approx(published_km, rel=0.01)


def test_distance_accepts_display_names() -> None:
    assert distance_km("West Europe", "North Europe") == distance_km("westeurope", "northeurope")


@given(regions)
def test_a_region_normalises_to_itself_and_is_zero_km_from_itself(region: str) -> None:
    assert normalize_region(region.upper()) == region
    assert distance_km(region, region) == 0.0


@given(regions, regions)
def test_distance_is_symmetric_and_bounded_by_half_the_globe(a: str, b: str) -> None:
    assert distance_km(a, b) == pytest.approx(distance_km(b, a))
    assert 0.0 <= distance_km(a, b) <= HALF_EARTH_CIRCUMFERENCE_KM


@given(regions, regions, regions)
def test_distance_obeys_the_triangle_inequality(a: str, b: str, c: str) -> None:
    assert distance_km(a, c) <= distance_km(a, b) + distance_km(b, c) + 1e-6
