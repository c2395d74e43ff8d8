"""Linked hubs and service settings, as an administrator sets them up."""

from __future__ import annotations

import re

import pytest


def test_first_command_creates_the_store_with_a_dps_style_id_scope(dps):
    dps.ok("init")
    service = dps.json("service", "show")
    props = service["properties"]
    assert re.fullmatch(r"0ne[0-9A-F]{8}", props["idScope"])
    assert props["allocationPolicy"] == "Hashed"
    assert props["deviceProvisioningHostName"] == "global.azure-devices-provisioning.net"
    assert props["operationsCount"] == 0
    if dps.is_file:
        assert dps.store.stat().st_mode & 0o777 == 0o600
    # The scope is stable: it was stored, not regenerated.
    assert dps.json("service", "show")["properties"]["idScope"] == props["idScope"]


def test_a_store_begun_by_a_write_has_service_settings(dps):
    # A store whose first command was `hub add` used to have no service record: `service show`, `export` and
    # `keys sas` then failed with exit 1 ("the store has no service settings yet").
    dps.ok("hub", "add", "hub-a")
    scope = dps.json("service", "show")["properties"]["idScope"]
    assert re.fullmatch(r"0ne[0-9A-F]{8}", scope)
    assert dps.json("export")["service"]["idScope"] == scope
    assert f"sr={scope}%2Fregistrations%2Fdev-01" in dps.ok("keys", "sas", "--registration-id", "dev-01", "--key", "AAAAAAAAAAAAAAAAAAAAAA==").stdout


def test_init_sets_scope_and_policy_and_refuses_to_overwrite(dps):
    created = dps.json("init", "--id-scope", "0ne00ABCDEF", "--allocation-policy", "geoLatency")
    assert created["properties"]["idScope"] == "0ne00ABCDEF"
    assert created["properties"]["allocationPolicy"] == "GeoLatency"
    again = dps("init")
    assert again.exit_code == 4, again
    assert dps("init", "--id-scope", "bogus").exit_code in (2, 4)


def test_init_validates_its_input(tmp_path):
    from tests.helpers.cli import Dps

    fresh = Dps(tmp_path / "fresh.json")
    assert fresh("init", "--id-scope", "0ne123").exit_code == 2
    assert fresh("init", "--allocation-policy", "custom").exit_code == 2
    assert not (tmp_path / "fresh.json").exists()


@pytest.mark.rule("§8/custom-is-not-a-service-default")
def test_service_update(dps):
    assert dps.json("service", "update", "--allocation-policy", "static")["properties"]["allocationPolicy"] == "Static"
    custom = dps("service", "update", "--allocation-policy", "custom")
    assert custom.exit_code == 2 and "custom" in custom.stderr
    located = dps.json("service", "update", "--location", "West Europe")
    assert located["location"] == "westeurope"
    unknown = dps("service", "update", "--location", "atlantis")
    assert unknown.exit_code == 2 and "atlantis" in unknown.stderr


@pytest.mark.rule("§13/allocation-weight-range")
def test_hub_session(dps):
    hub = dps.json("hub", "add", "factory-eu", "--location", "westeurope", "--weight", "3")
    assert hub == {
        "allocationWeight": 3,
        "applyAllocationPolicy": None,
        "connectionString": "HostName=factory-eu.azure-devices.net;SharedAccessKeyName=iothubowner;SharedAccessKey=****",
        "location": "westeurope",
        "name": "factory-eu.azure-devices.net",
    }
    assert dps("hub", "add", "factory-eu.azure-devices.net").exit_code == 4  # same hub, other spelling
    cs = "HostName=factory-us.azure-devices.net;SharedAccessKeyName=iothubowner;SharedAccessKey=c2VjcmV0c2VjcmV0c2VjcmV0"
    dps.ok("hub", "add", "factory-us", "--connection-string", cs, "--no-apply-allocation-policy")
    shown = dps.json("hub", "show", "factory-us", "--show-keys")
    assert shown["connectionString"] == cs and shown["applyAllocationPolicy"] is False
    assert "c2VjcmV0c2VjcmV0c2VjcmV0" not in dps.ok("hub", "list").stdout
    wrong_host = dps("hub", "add", "other", "--connection-string", cs)
    assert wrong_host.exit_code == 2 and "factory-us" in wrong_host.stderr
    assert dps.json("hub", "update", "factory-eu", "--weight", "7")["allocationWeight"] == 7
    assert dps("hub", "update", "factory-eu", "--weight", "1001").exit_code == 2
    assert [h["name"] for h in dps.json("hub", "list")] == ["factory-eu.azure-devices.net", "factory-us.azure-devices.net"]
    dps.ok("hub", "delete", "factory-us")
    assert dps("hub", "show", "factory-us").exit_code == 3
    assert dps("hub", "add", "bad_name!").exit_code == 2


@pytest.mark.rule("§12/quotas")
def test_hub_limit(dps, monkeypatch):
    import dpsctl.core.hubs as hubs

    monkeypatch.setattr(hubs, "MAX_LINKED_HUBS", 2)
    dps.ok("hub", "add", "a")
    dps.ok("hub", "add", "b")
    assert dps("hub", "add", "c").exit_code == 4


def test_forced_hub_delete_removes_it_from_enrollments(dps):
    dps.ok("hub", "add", "a")
    dps.ok("hub", "add", "b")
    dps.ok("enrollment", "add", "dev", "--attestation", "symmetricKey", "--hub", "a", "--hub", "b")
    dps.ok("hub", "delete", "a", "--force")
    assert dps.json("enrollment", "show", "dev")["iotHubs"] == ["b.azure-devices.net"]


def test_usage_errors_are_one_line_with_a_hint_and_exit_2(dps):
    run = dps("enrollment", "add", "dev")  # --attestation missing
    assert run.exit_code == 2, run
    lines = run.stderr.strip().splitlines()
    assert lines[0].startswith("error: ") and lines[1].startswith("hint: ")
    assert run.stdout == ""
    assert dps("no-such-command").exit_code == 2
