"""Laws of the record models and identifiers."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dpsctl.core.errors import InvalidInput
from dpsctl.core.ids import hub_host_name, validate_id_scope, validate_registration_id
from dpsctl.core.models import Attestation, CustomAllocation, EnrollmentGroup, IndividualEnrollment, ReprovisionPolicy
from dpsctl.core.service_records import LinkedHub

REG_ID = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._:-]*[A-Za-z0-9-])?")
valid_ids = st.from_regex(r"\A[A-Za-z0-9]([A-Za-z0-9._:-]{0,40}[A-Za-z0-9-])?\Z")
keys = st.binary(min_size=16, max_size=64).map(lambda b: __import__("base64").b64encode(b).decode())
twins = st.none() | st.fixed_dictionaries(
    {"tags": st.dictionaries(st.text(min_size=1, max_size=5), st.integers()), "properties": st.fixed_dictionaries({"desired": st.dictionaries(st.text(min_size=1, max_size=5), st.text(max_size=5))})}
)


@given(st.text(max_size=140))
def test_registration_id_validation_matches_the_documented_rule(text):
    expected = bool(REG_ID.fullmatch(text)) and len(text) <= 128
    try:
        validate_registration_id(text)
        accepted = True
    except InvalidInput:
        accepted = False
    assert accepted == expected


@given(valid_ids)
def test_valid_ids_are_accepted_unchanged(reg_id):
    assert validate_registration_id(reg_id) == reg_id


def test_unicode_look_alikes_are_refused():
    for text in ("dеvice", "ｄevice", "device\u200b", "dev\nice"):
        with pytest.raises(InvalidInput):
            validate_registration_id(text)


@given(st.from_regex(r"\A0ne[0-9a-fA-F]{8}\Z"))
def test_id_scopes_normalise_to_upper_hex(scope):
    assert validate_id_scope(scope) == "0ne" + scope[3:].upper()


@given(st.from_regex(r"\A[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?\Z"))
def test_bare_hub_names_become_host_names(name):
    assert hub_host_name(name) == f"{name}.azure-devices.net"
    assert hub_host_name(hub_host_name(name).upper()) == hub_host_name(name)


@settings(max_examples=60)
@given(
    reg_id=valid_ids,
    primary=keys,
    secondary=keys,
    status=st.sampled_from(["enabled", "disabled"]),
    edge=st.booleans(),
    twin=twins,
    policy=st.sampled_from([None, "hashed", "geoLatency", "static", "custom"]),
    rp=st.sampled_from(["migrate", "reset", "never"]),
    device_id=st.none() | st.from_regex(r"\A[A-Za-z0-9-]{1,20}\Z"),
)
def test_individual_enrollments_survive_a_round_trip(reg_id, primary, secondary, status, edge, twin, policy, rp, device_id):
    entry = IndividualEnrollment(
        registration_id=reg_id,
        device_id=device_id,
        attestation=Attestation("symmetricKey", primary_key=primary, secondary_key=secondary),
        provisioning_status=status,
        iot_edge=edge,
        initial_twin=twin,
        allocation_policy=policy,
        iot_hubs=("hub-a.azure-devices.net",),
        custom_allocation=CustomAllocation("https://example.com/x") if policy == "custom" else None,
        reprovision_policy=ReprovisionPolicy.from_name(rp),
        etag='"e"',
        created="2026-01-01T00:00:00.0000000Z",
        updated="2026-01-02T00:00:00.0000000Z",
    )
    assert IndividualEnrollment.from_dict(entry.to_dict()) == entry


@given(group_id=valid_ids, primary=keys, secondary=keys, twin=twins)
def test_groups_survive_a_round_trip(group_id, primary, secondary, twin):
    group = EnrollmentGroup(enrollment_group_id=group_id, attestation=Attestation("symmetricKey", primary_key=primary, secondary_key=secondary), initial_twin=twin)
    assert EnrollmentGroup.from_dict(group.to_dict()) == group


@given(weight=st.none() | st.integers(1, 1000), apply=st.none() | st.booleans())
def test_linked_hubs_survive_a_round_trip(weight, apply):
    hub = LinkedHub("h.azure-devices.net", "HostName=h.azure-devices.net;SharedAccessKeyName=o;SharedAccessKey=k", "westeurope", weight, apply)
    assert LinkedHub.from_dict(hub.to_dict()) == hub


def test_hidden_keys_are_really_absent():
    entry = IndividualEnrollment(registration_id="d", attestation=Attestation("symmetricKey", primary_key="a" * 24, secondary_key="b" * 24))
    assert "a" * 24 not in str(entry.to_dict(show_keys=False))


@given(st.sampled_from(sorted(ReprovisionPolicy.PRESETS)))
def test_reprovision_presets_name_themselves(name):
    policy = ReprovisionPolicy.from_name(name)
    assert ReprovisionPolicy.from_name(policy.name) == policy
