"""Batch files and provisioning storms: many devices, one process, chunked transactions."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from dpsctl.core.certs import issue_device, issue_intermediate, issue_root, write_certificates, write_private_key
from dpsctl.core.keys import derive_device_key
from tests.cli.provision_helpers import ID_SCOPE, init

GROUP_KEY = "oiK77Oy7rBw8YB6IS6ukRChAw+Yq6GC61RMrPLSTiOOtdI+XDu0LmLuNm11p+qv2I+adqGUdZHm46zXAQdZoOA=="


def group(dps, *hubs):
    init(dps, *hubs)
    dps.ok("enrollment-group", "add", "fleet", "--attestation", "symmetricKey", "--primary-key", GROUP_KEY)


def test_a_storm_registers_every_device_and_the_hubs_agree(dps):
    group(dps, "hub-a", "hub-b")
    dps.ok("hub", "update", "hub-b", "--weight", "3")
    summary = dps.json("provision", "--count", "240", "--id-pattern", "sensor-{n:04d}", "--group", "fleet", "--chunk-size", "50")
    assert summary["devices"] == 240 and summary["assigned"] == 240 and summary["byStatus"] == {"assigned": 240}
    registrations = dps.json("registration", "list")
    assert sorted(r["registrationId"] for r in registrations) == [f"sensor-{n:04d}" for n in range(1, 241)]
    assert all(r["status"] == "assigned" and r["symmetricKey"]["enrollmentGroupId"] == "fleet" for r in registrations)
    per_hub = Counter(r["assignedHub"] for r in registrations)
    assert dict(per_hub) == summary["devicesPerHub"]
    devices = dps.json("device", "list")
    assert Counter(d["hub"] for d in devices) == per_hub  # the hubs' registries hold exactly those devices
    assert per_hub["hub-b.azure-devices.net"] > per_hub["hub-a.azure-devices.net"]
    assert dps.json("service", "show")["properties"]["operationsCount"] == 1 + 240  # the group, then each device
    assert set(summary["latencyMs"]) == {"p50", "p90", "p99", "max"}


def test_a_storm_with_the_group_key_given_offline(dps):
    group(dps, "hub-a")
    summary = dps.json("provision", "--count", "20", "--id-pattern", "d{n}", "--group-key", GROUP_KEY)
    assert summary["assigned"] == 20


def test_a_storm_against_the_wrong_key_fails_with_a_summary(dps):
    group(dps, "hub-a")
    other = "8isrFI1sGsIlvvFSSFRiMfCNzv21fjbE/+ah/lSh3lF8e2YG1Te7w1KpZhJFFXJrqYKi9yegxkqIChbqOS9Egw=="
    run = dps("provision", "--count", "10", "--id-pattern", "d{n}", "--group-key", other, "-o", "json")
    assert run.exit_code == 5, run
    doc = run.json()
    assert doc["assigned"] == 0 and doc["byStatus"] == {"unauthorized": 10}
    assert list(doc["refusedByReason"].values()) == [10]  # one reason, the device ID folded out of it
    assert dps.json("registration", "history")[-1]["status"] == "unauthorized"


@pytest.mark.parametrize("pattern", ["fixed-id", "{m}", "{n:q}"])
def test_bad_id_patterns_are_input_errors(dps, pattern):
    group(dps, "hub-a")
    assert dps("provision", "--count", "3", "--id-pattern", pattern, "--group", "fleet").exit_code == 2


def test_mixing_single_device_flags_with_a_batch_is_refused(dps, tmp_path):
    group(dps, "hub-a")
    assert dps("provision", "--count", "3", "--group", "fleet", "--registration-id", "x").exit_code == 2
    assert dps("provision", "--count", "3").exit_code == 2  # no group
    assert dps("provision", "--count", "3", "--group", "fleet", "--group-key", GROUP_KEY).exit_code == 2


@pytest.fixture(scope="module")
def x509_devices(tmp_path_factory):
    folder = tmp_path_factory.mktemp("batch-x509")
    root, root_key = issue_root("Batch Root")
    inter, inter_key = issue_intermediate("Batch Intermediate", root, root_key)
    write_certificates(folder / "root.pem", [root])
    for i in range(3):
        cert, key = issue_device(f"cam-{i}", inter, inter_key)
        write_certificates(folder / f"cam-{i}.pem", [cert, inter])
        write_private_key(folder / f"cam-{i}.key", key)
    return folder


def test_a_mixed_csv_batch(dps, x509_devices, tmp_path):
    group(dps, "hub-a", "hub-b")
    dps.ok("enrollment-group", "add", "cameras", "--attestation", "x509", "--signing-cert", str(x509_devices / "root.pem"))
    rows = ["registrationId,symmetricKey,cert,key,payload,region"]
    rows += [f"sensor-{i},{derive_device_key(GROUP_KEY, f'sensor-{i}')},,," for i in range(3)]
    rows += [f"cam-{i},,{x509_devices / f'cam-{i}.pem'},{x509_devices / f'cam-{i}.key'}," for i in range(3)]
    rows.append('sensor-9,' + derive_device_key(GROUP_KEY, "sensor-9") + ',,,"{""modelId"": ""dtmi:x;1""}",westeurope')
    batch = tmp_path / "devices.csv"
    batch.write_text("\n".join(rows) + "\n")
    summary = dps.json("provision", "--batch", str(batch))
    assert summary["assigned"] == 7, summary
    ids = {r["registrationId"]: r for r in dps.json("registration", "list")}
    assert set(ids) == {"sensor-0", "sensor-1", "sensor-2", "sensor-9", "cam-0", "cam-1", "cam-2"}
    assert ids["cam-1"]["x509"]["enrollmentGroupId"] == "cameras"


def test_a_jsonl_batch_with_bad_lines_counts_them_and_goes_on(dps, tmp_path):
    group(dps, "hub-a")
    lines = [
        {"registrationId": "ok-1", "symmetricKey": derive_device_key(GROUP_KEY, "ok-1")},
        {"registrationId": "no-cert", "cert": "missing.pem", "key": "missing.key"},
        {"registrationId": "bad id!", "symmetricKey": derive_device_key(GROUP_KEY, "x")},
        {"registrationId": "wrong-key", "symmetricKey": derive_device_key(GROUP_KEY, "someone-else")},
        {"registrationId": "ok-2", "symmetricKey": derive_device_key(GROUP_KEY, "ok-2")},
    ]
    batch = tmp_path / "devices.jsonl"
    batch.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    run = dps("provision", "--batch", str(batch), "-o", "json")
    assert run.exit_code == 5, run  # the most serious refusal decides the exit code
    doc = run.json()
    assert doc["assigned"] == 2 and doc["byStatus"] == {"assigned": 2, "invalid": 2, "unauthorized": 1}
    assert any("line 2" in reason and "missing.pem" in reason for reason in doc["refusedByReason"])
    assert {r["registrationId"] for r in dps.json("registration", "list")} == {"ok-1", "ok-2"}


def test_batch_file_errors(dps, tmp_path):
    group(dps, "hub-a")
    assert dps("provision", "--batch", str(tmp_path / "nope.csv")).exit_code == 2
    unknown = tmp_path / "u.csv"
    unknown.write_text("registrationId,colour\nx,red\n")
    run = dps("provision", "--batch", str(unknown))
    assert run.exit_code == 2 and "colour" in run.stderr
    assert ID_SCOPE == dps.json("service", "show")["properties"]["idScope"]
