"""Built-in allocation policies: hashed (weighted rendezvous), geoLatency and static."""

from __future__ import annotations

import hashlib
import math
import os
import random
import subprocess
import sys
from collections import Counter

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from dpsctl.core.allocation import HubChoice, geo_latency, hashed, static
from dpsctl.core.errors import AllocationFailed, InvalidInput

DEVICES = [f"device-{n:05d}" for n in range(10_000)]
TOASTERS = HubChoice("toasters.azure-devices.net")
HEATPUMPS = HubChoice("heatpumps.azure-devices.net")
FRIDGES = HubChoice("fridges.azure-devices.net")
KETTLES = HubChoice("kettles.azure-devices.net")


def assignments(hubs: list[HubChoice]) -> dict[str, str]:
    return {device: hashed(device, hubs) for device in DEVICES}


def shares(hubs: list[HubChoice]) -> dict[str, float]:
    counts = Counter(assignments(hubs).values())
    return {hub.host_name: counts[hub.host_name] / len(DEVICES) for hub in hubs}


# --- hashed -----------------------------------------------------------------------------------


def test_a_device_lands_on_the_same_hub_every_time() -> None:
    hubs = [TOASTERS, HEATPUMPS, FRIDGES]
    first = assignments(hubs)
    assert assignments(hubs) == first
    assert len(set(first.values())) == 3


def test_registration_ids_and_host_names_are_case_insensitive() -> None:
    hubs = [TOASTERS, HEATPUMPS, FRIDGES]
    shouting = [HubChoice(hub.host_name.upper()) for hub in hubs]
    for device in DEVICES[:200]:
        chosen = hashed(device, hubs)
        assert hashed(device.upper(), hubs) == chosen
        assert hashed(device, shouting) == chosen.upper()


def test_the_choice_is_the_same_in_another_process_with_another_hash_seed() -> None:
    hubs = [TOASTERS, HEATPUMPS, FRIDGES]
    sample = DEVICES[:50]
    script = (
        "import sys\n"
        "from dpsctl.core.allocation import HubChoice, hashed\n"
        f"hubs = [HubChoice(h) for h in {[hub.host_name for hub in hubs]!r}]\n"
        f"print(' '.join(hashed(d, hubs) for d in {sample!r}))\n"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345", "PYTHONPATH": os.getcwd()}
    other = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
    assert other.stdout.split() == [hashed(device, hubs) for device in sample]


def test_the_score_follows_the_documented_formula() -> None:
    # An independent re-derivation: u from SHA-256 of "<id>\n<host>" (both lower-cased), score -w/ln(u).
    def score(registration_id: str, hub: HubChoice) -> float:
        digest = hashlib.sha256(f"{registration_id.lower()}\n{hub.host_name.lower()}".encode()).digest()
        u = ((int.from_bytes(digest[:8], "big") >> 12) + 0.5) / 2**52
        return -hub.weight / math.log(u)

    hubs = [TOASTERS, HubChoice("heatpumps.azure-devices.net", weight=3), FRIDGES]
    for device in ["Breakroom499-Contoso-TstrSD-007", *DEVICES[:100]]:
        assert hashed(device, hubs) == max(hubs, key=lambda hub: score(device, hub)).host_name


def test_weights_one_one_two_split_devices_a_quarter_a_quarter_a_half() -> None:
    heavy = HubChoice("fridges.azure-devices.net", weight=2)
    split = shares([TOASTERS, HEATPUMPS, heavy])
    assert split[TOASTERS.host_name] == pytest.approx(0.25, abs=0.02)
    assert split[HEATPUMPS.host_name] == pytest.approx(0.25, abs=0.02)
    assert split[heavy.host_name] == pytest.approx(0.50, abs=0.02)


def test_linking_a_fourth_hub_moves_only_its_share_and_only_to_it() -> None:
    before = assignments([TOASTERS, HEATPUMPS, FRIDGES])
    after = assignments([TOASTERS, HEATPUMPS, FRIDGES, KETTLES])
    moved = [device for device in DEVICES if before[device] != after[device]]
    assert len(moved) / len(DEVICES) == pytest.approx(0.25, abs=0.03)
    assert {after[device] for device in moved} == {KETTLES.host_name}
    assert all(before[device] == after[device] for device in DEVICES if after[device] != KETTLES.host_name)


def test_unlinking_a_hub_moves_only_the_devices_that_were_on_it() -> None:
    before = assignments([TOASTERS, HEATPUMPS, FRIDGES, KETTLES])
    after = assignments([TOASTERS, HEATPUMPS, FRIDGES])
    moved = {device for device in DEVICES if before[device] != after[device]}
    assert moved == {device for device in DEVICES if before[device] == KETTLES.host_name}
    assert moved  # the fourth hub did get devices, so the law above is not vacuous


def test_raising_a_weight_only_pulls_devices_towards_that_hub() -> None:
    before = assignments([TOASTERS, HEATPUMPS, FRIDGES])
    after = assignments([TOASTERS, HEATPUMPS, HubChoice(FRIDGES.host_name, weight=5)])
    moved = [device for device in DEVICES if before[device] != after[device]]
    assert moved
    assert {after[device] for device in moved} == {FRIDGES.host_name}


def test_a_single_hub_gets_every_device() -> None:
    assert {hashed(device, [KETTLES]) for device in DEVICES[:100]} == {KETTLES.host_name}


def test_no_candidate_hub_means_allocation_failed() -> None:
    with pytest.raises(AllocationFailed):
        hashed("device-1", [])


@pytest.mark.parametrize("weight", [0, -1, 1001, True, 1.5])
def test_weights_outside_one_to_a_thousand_are_invalid(weight: object) -> None:
    with pytest.raises(InvalidInput):
        HubChoice("toasters.azure-devices.net", weight=weight)  # type: ignore[arg-type]


def test_a_hub_needs_a_host_name() -> None:
    with pytest.raises(InvalidInput):
        HubChoice("")


host_names = st.from_regex(r"[a-z][a-z0-9-]{0,20}\.azure-devices\.net", fullmatch=True)
hub_lists = st.lists(
    st.builds(HubChoice, host_names, st.integers(min_value=1, max_value=1000)),
    min_size=1,
    max_size=8,
    unique_by=lambda hub: hub.host_name,
)
registration_ids = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,40}", fullmatch=True)


@given(registration_ids, hub_lists, st.randoms(use_true_random=False))
def test_hashed_picks_a_candidate_whatever_the_order_of_the_list(
    registration_id: str, hubs: list[HubChoice], rng: random.Random
) -> None:
    chosen = hashed(registration_id, hubs)
    assert chosen in {hub.host_name for hub in hubs}
    shuffled = list(hubs)
    rng.shuffle(shuffled)
    assert hashed(registration_id, shuffled) == chosen


@given(registration_ids, hub_lists, host_names)
def test_adding_a_hub_either_keeps_the_choice_or_picks_the_new_hub(
    registration_id: str, hubs: list[HubChoice], extra: str
) -> None:
    assume(extra not in {hub.host_name for hub in hubs})
    before = hashed(registration_id, hubs)
    assert hashed(registration_id, [*hubs, HubChoice(extra)]) in {before, extra}


# --- geoLatency -------------------------------------------------------------------------------


def test_a_device_in_west_europe_goes_to_the_north_europe_hub_rather_than_east_us() -> None:
    dublin = HubChoice("dublin.azure-devices.net", location="northeurope")
    virginia = HubChoice("virginia.azure-devices.net", location="eastus")
    for device in DEVICES[:200]:
        assert geo_latency(device, [virginia, dublin], "westeurope") == dublin.host_name
        assert geo_latency(device, [virginia, dublin], "East US 2") == virginia.host_name


def test_hubs_in_the_same_region_split_devices_by_hashed() -> None:
    ams1 = HubChoice("ams1.azure-devices.net", location="westeurope")
    ams2 = HubChoice("ams2.azure-devices.net", weight=3, location="West Europe")
    dublin = HubChoice("dublin.azure-devices.net", location="northeurope")
    picks: Counter[str] = Counter()
    for device in DEVICES[:2000]:
        chosen = geo_latency(device, [dublin, ams1, ams2], "westeurope")
        assert chosen == hashed(device, [ams1, ams2])
        picks[chosen] += 1
    assert picks[ams2.host_name] / 2000 == pytest.approx(0.75, abs=0.04)


def test_hubs_without_a_location_lose_to_any_located_hub() -> None:
    somewhere = HubChoice("somewhere.azure-devices.net")
    sydney = HubChoice("sydney.azure-devices.net", location="australiaeast")
    for device in DEVICES[:200]:
        assert geo_latency(device, [somewhere, sydney], "westeurope") == sydney.host_name


def test_when_no_hub_has_a_location_geo_latency_is_hashed() -> None:
    hubs = [TOASTERS, HEATPUMPS, FRIDGES]
    for device in DEVICES[:200]:
        assert geo_latency(device, hubs, "westeurope") == hashed(device, hubs)


def test_an_unknown_device_region_is_invalid_input() -> None:
    with pytest.raises(InvalidInput):
        geo_latency("device-1", [HubChoice("a.azure-devices.net", location="westeurope")], "narnia")


def test_a_hub_in_an_unknown_region_is_invalid_input() -> None:
    with pytest.raises(InvalidInput):
        geo_latency("device-1", [HubChoice("a.azure-devices.net", location="narnia")], "westeurope")


def test_geo_latency_without_hubs_fails() -> None:
    with pytest.raises(AllocationFailed):
        geo_latency("device-1", [], "westeurope")


# --- static -----------------------------------------------------------------------------------


def test_static_returns_the_one_named_hub() -> None:
    assert static([KETTLES]) == KETTLES.host_name


@pytest.mark.parametrize("hubs", [[], [TOASTERS, HEATPUMPS]])
def test_static_with_other_than_one_hub_fails(hubs: list[HubChoice]) -> None:
    with pytest.raises(AllocationFailed) as caught:
        static(hubs)
    assert str(len(hubs)) in caught.value.message
