"""Import and export of the enrollment list."""

from __future__ import annotations

import base64
import json

import yaml

from tests.helpers.cli import Dps

KEY = base64.b64encode(b"k" * 32).decode()
KEY2 = base64.b64encode(b"j" * 32).decode()

DOC = {
    "linkedHubs": [
        {"name": "hub-eu", "location": "westeurope", "allocationWeight": 2},
        {"name": "hub-us.azure-devices.net", "location": "eastus"},
    ],
    "enrollments": [
        {
            "registrationId": "dev-1",
            "attestation": {"type": "symmetricKey", "symmetricKey": {"primaryKey": KEY, "secondaryKey": KEY2}},
            "initialTwin": {"tags": {"floor": 1}, "properties": {"desired": {"rate": 5}}},
            "allocationPolicy": "static",
            "iotHubs": ["hub-eu"],
        },
        {"registrationId": "dev-2", "attestation": {"type": "symmetricKey"}, "provisioningStatus": "disabled"},
    ],
    "enrollmentGroups": [
        {"enrollmentGroupId": "fleet", "attestation": {"type": "symmetricKey"}, "reprovisionPolicy": {"updateHubAssignment": False, "migrateDeviceData": False}}
    ],
}


def write(tmp_path, doc, name="doc.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(doc) if name.endswith(".yaml") else json.dumps(doc))
    return str(path)


def test_import_creates_then_is_idempotent(dps, tmp_path):
    path = write(tmp_path, DOC)
    plan = dps.json("import", path)
    assert plan["counts"] == {"created": 5, "updated": 0, "unchanged": 0}
    assert plan["created"]["enrollments"] == ["dev-1", "dev-2"]
    again = dps.json("import", path)
    assert again["counts"]["created"] == 0 and again["counts"]["updated"] == 0
    assert dps.json("enrollment", "show", "dev-1", "--show-keys")["attestation"]["symmetricKey"]["primaryKey"] == KEY
    assert dps.json("enrollment", "show", "dev-1")["iotHubs"] == ["hub-eu.azure-devices.net"]
    assert dps.json("enrollment-group", "show", "fleet")["reprovisionPolicy"]["updateHubAssignment"] is False


def test_import_updates_changed_records(dps, tmp_path):
    dps.ok("import", write(tmp_path, DOC))
    changed = json.loads(json.dumps(DOC))
    changed["enrollments"][1]["provisioningStatus"] = "enabled"
    plan = dps.json("import", write(tmp_path, changed, "changed.json"))
    assert plan["updated"]["enrollments"] == ["dev-2"]
    assert dps.json("enrollment", "show", "dev-2")["provisioningStatus"] == "enabled"


def test_dry_run_writes_nothing(dps, tmp_path):
    dps.ok("init")  # create the store
    before = dps.snapshot()
    plan = dps.json("import", write(tmp_path, DOC), "--dry-run")
    assert plan["counts"]["created"] == 5
    assert dps.snapshot() == before and before["service"]


def test_one_bad_record_writes_nothing_and_names_record_and_field(dps, tmp_path):
    bad = json.loads(json.dumps(DOC))
    bad["enrollments"].append({"registrationId": "dev-3", "attestation": {"type": "symmetricKey"}, "provisioningStatus": "sometimes"})
    dps.ok("init")
    before = dps.snapshot()
    run = dps("import", write(tmp_path, bad))
    assert run.exit_code == 2, run
    assert "dev-3" in run.stderr and "provisioningStatus" in run.stderr
    assert dps.snapshot() == before


def test_import_refuses_unknown_fields_duplicates_and_dangling_hubs(dps, tmp_path):
    typo = {"enrollments": [{"registrationId": "a", "attestation": {"type": "symmetricKey"}, "provisioningStatuss": "enabled"}]}
    assert "provisioningStatuss" in dps("import", write(tmp_path, typo, "t.json")).stderr
    dup = {"enrollments": [{"registrationId": "a", "attestation": {"type": "symmetricKey"}}, {"registrationId": "A", "attestation": {"type": "symmetricKey"}}]}
    assert dps("import", write(tmp_path, dup, "d.json")).exit_code == 2
    dangling = {"enrollments": [{"registrationId": "a", "attestation": {"type": "symmetricKey"}, "iotHubs": ["nowhere"]}]}
    run = dps("import", write(tmp_path, dangling, "h.json"))
    assert run.exit_code == 2 and "nowhere" in run.stderr


def test_yaml_aliases_and_python_tags_are_refused(dps, tmp_path):
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text('a: &a ["x","x"]\nb: &b [*a,*a]\nc: &c [*b,*b]\nenrollments: []\n')
    assert dps("import", str(bomb)).exit_code == 2
    tag = tmp_path / "tag.yaml"
    tag.write_text("enrollments: !!python/object/apply:os.system ['echo pwned']\n")
    run = dps("import", str(tag))
    assert run.exit_code == 2 and "Traceback" not in run.stderr


def test_export_then_import_reproduces_the_store(dps, tmp_path):
    dps.ok("import", write(tmp_path, DOC))
    dps.ok("enrollment", "add", "solo", "--attestation", "symmetricKey", "--edge")
    exported = dps.ok("export", "--show-keys", "-o", "json").stdout
    copy = dps.sibling("copy")
    copy.ok("import", write(tmp_path, json.loads(exported), "export.json"))
    assert copy.ok("export", "--show-keys", "-o", "json").stdout == exported
    # Without --show-keys the export hides keys, and importing it over the store keeps the stored keys.
    hidden = dps.ok("export").stdout
    assert KEY not in hidden
    plan = copy.json("import", write(tmp_path, yaml.safe_load(hidden), "hidden.yaml"))
    assert plan["counts"]["updated"] == 0
    assert copy.json("enrollment", "show", "dev-1", "--show-keys")["attestation"]["symmetricKey"]["primaryKey"] == KEY


def test_import_of_many_enrollments_is_one_write(tmp_path, monkeypatch):
    import dpsctl.store.tinydb_store as mod

    dps = Dps(tmp_path / "dps.json")
    doc = {"enrollments": [{"registrationId": f"bulk-{i:05d}", "attestation": {"type": "symmetricKey", "symmetricKey": {"primaryKey": KEY, "secondaryKey": KEY2}}} for i in range(2000)]}
    path = write(tmp_path, doc, "bulk.json")
    writes = []
    real = mod.write_atomically
    monkeypatch.setattr(mod, "write_atomically", lambda p, b: writes.append(p) or real(p, b))
    assert dps.json("import", path)["counts"]["created"] == 2000
    assert len(writes) == 1
    assert len(dps.json("enrollment", "list")) == 2000


def test_ca_certificates_travel_with_the_groups_that_reference_them(dps, tmp_path):
    from dpsctl.core.certs import issue_root, write_certificates

    root, _ = issue_root("Transfer Root")
    write_certificates(tmp_path / "root.pem", [root])
    dps.ok("ca", "add", "transfer-root", "--cert", str(tmp_path / "root.pem"), "--verified")
    dps.ok("enrollment-group", "add", "cams", "--attestation", "x509", "--ca-ref", "transfer-root")
    exported = dps.ok("export", "-o", "json").stdout
    assert json.loads(exported)["certificates"][0]["name"] == "transfer-root"
    copy = dps.sibling("copy")
    plan = copy.json("import", write(tmp_path, json.loads(exported), "with-ca.json"))
    assert plan["created"]["certificates"] == ["transfer-root"] and plan["created"]["enrollmentGroups"] == ["cams"]
    assert copy.json("ca", "show", "transfer-root")["properties"]["isVerified"] is True
    assert copy.json("import", write(tmp_path, json.loads(exported), "again.json"))["counts"]["created"] == 0
    assert copy.ok("export", "-o", "json").stdout == exported


def test_a_partial_key_set_keeps_the_stored_other_key(dps, tmp_path):
    only_primary = {"enrollments": [{"registrationId": "p", "attestation": {"type": "symmetricKey", "symmetricKey": {"primaryKey": KEY}}}]}
    dps.ok("import", write(tmp_path, only_primary, "p.json"))
    secondary = dps.json("enrollment", "show", "p", "--show-keys")["attestation"]["symmetricKey"]["secondaryKey"]
    again = dps.json("import", write(tmp_path, only_primary, "p.json"))
    assert again["counts"]["updated"] == 0
    assert dps.json("enrollment", "show", "p", "--show-keys")["attestation"]["symmetricKey"]["secondaryKey"] == secondary
