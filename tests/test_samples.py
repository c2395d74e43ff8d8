"""Every file in sample-enrollments/ imports on its own into an empty store, all of them together, and idempotently."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from dpsctl.core.certs import check_key_strength, is_ca, load_certificates, sha1_thumbprint

SAMPLES = Path(__file__).resolve().parent.parent / "sample-enrollments"
FILES = sorted(SAMPLES.glob("*.yaml"))
NAMES = [f.name for f in FILES]

# The published vector of Microsoft's symmetric-key attestation article (reference section 4.2).
PUBLISHED_DEVICE = "sn-007-888-abc-mac-a1-b2-c3-d4-e5-f6"
PUBLISHED_DERIVED_KEY = "Jsm0lyGpjaVYVP2g3FnmnmG9dI/9qU24wNoykUmermc="


def _doc(name: str) -> dict:
    return yaml.safe_load((SAMPLES / name).read_text(encoding="utf-8"))


def _counts(dps, path: Path) -> dict:
    return dps.json("import", str(path))["counts"]


def _by_id(records: list[dict], field: str) -> dict[str, dict]:
    return {r[field]: r for r in records}


def test_the_samples_issue_2_asks_for_are_there():
    for name in (
        "hubs.yaml",
        "symmetric-key-individual.yaml",
        "symmetric-key-group.yaml",
        "x509-group.yaml",
        "x509-group-root.cert.pem",
        "tpm-individual.yaml",
        "static-allocation.yaml",
        "geolatency-allocation.yaml",
        "custom-allocation.yaml",
        "initial-twins.yaml",
        "README.md",
    ):
        assert (SAMPLES / name).is_file(), f"sample-enrollments/{name} is missing"


@pytest.mark.parametrize("name", NAMES)
def test_sample_is_a_complete_commented_document(name):
    text = (SAMPLES / name).read_text(encoding="utf-8")
    assert text.startswith("#"), "start with a comment saying what the sample shows"
    doc = yaml.safe_load(text)
    assert set(doc) <= {"service", "linkedHubs", "enrollments", "enrollmentGroups"}
    assert doc.get("linkedHubs"), "each sample carries the hubs it needs"


@pytest.mark.parametrize("name", NAMES)
def test_sample_imports_alone_into_an_empty_store_and_again_unchanged(dps, name):
    doc = _doc(name)
    first = dps.json("import", str(SAMPLES / name))
    total = sum(len(doc.get(k) or []) for k in ("linkedHubs", "enrollments", "enrollmentGroups"))
    assert first["counts"] == {"created": total, "updated": 0, "unchanged": 0}
    # Every record landed, under its host name / ID.
    hubs = {h["name"] for h in dps.json("hub", "list")}
    assert hubs == {h["name"] if "." in h["name"] else h["name"] + ".azure-devices.net" for h in doc["linkedHubs"]}
    enrolled = {e["registrationId"] for e in dps.json("enrollment", "list")}
    assert enrolled == {e["registrationId"] for e in doc.get("enrollments") or []}
    groups = {g["enrollmentGroupId"] for g in dps.json("enrollment-group", "list")}
    assert groups == {g["enrollmentGroupId"] for g in doc.get("enrollmentGroups") or []}
    # Importing the same file again changes nothing.
    assert _counts(dps, SAMPLES / name) == {"created": 0, "updated": 0, "unchanged": total}


def test_all_samples_together_twice_are_idempotent(dps):
    for path in FILES:
        counts = _counts(dps, path)
        assert counts["updated"] == 0, f"{path.name} changed a record another sample created: shared hubs must match exactly"
    before = dps.ok("export", "--show-keys", "-o", "json").stdout
    for path in FILES:
        counts = _counts(dps, path)
        assert counts["created"] == 0 and counts["updated"] == 0, f"{path.name} is not idempotent: {counts}"
    assert dps.ok("export", "--show-keys", "-o", "json").stdout == before
    ids = [e["registrationId"] for e in dps.json("enrollment", "list")] + [g["enrollmentGroupId"] for g in dps.json("enrollment-group", "list")]
    assert len(ids) == len(set(ids))


def test_dry_run_of_every_sample_writes_nothing(dps):
    for path in FILES:
        plan = dps.json("import", str(path), "--dry-run")
        assert plan["counts"]["created"] > 0
    assert not dps.store.exists() or dps.json("enrollment", "list") == []


# --------------------------------------------------------------------------- what each sample means


def test_hubs_have_regions_and_weights(dps):
    dps.ok("import", str(SAMPLES / "hubs.yaml"))
    hubs = _by_id(dps.json("hub", "list"), "name")
    assert len({h["location"] for h in hubs.values()}) >= 3
    assert hubs["contoso-eus.azure-devices.net"]["allocationWeight"] == 3
    assert hubs["contoso-staging.azure-devices.net"]["applyAllocationPolicy"] is False
    assert all("SharedAccessKey=****" in h["connectionString"] for h in hubs.values()), "hub keys are masked without --show-keys"


def test_symmetric_key_individual_provisions_with_its_key(dps):
    dps.ok("import", str(SAMPLES / "symmetric-key-individual.yaml"))
    entry = dps.json("enrollment", "show", "thermostat-0001", "--show-keys")
    assert entry["deviceId"] == "thermostat-0001-lab"
    key = entry["attestation"]["symmetricKey"]["primaryKey"]
    assert key in (SAMPLES / "symmetric-key-individual.yaml").read_text(), "the key in the header comment is the enrolled one"
    result = dps.json("provision", "--registration-id", "thermostat-0001", "--symmetric-key", key)
    state = result["registrationState"]
    assert (result["status"], state["deviceId"]) == ("assigned", "thermostat-0001-lab")
    assert state["assignedHub"] in entry["iotHubs"]
    device = dps.json("device", "show", "thermostat-0001-lab")
    assert device["tags"] == {"building": "43", "floor": "2"}
    assert device["properties"]["desired"]["targetTemperature"] == 21.5


def test_symmetric_key_group_gives_the_published_derived_key(dps):
    dps.ok("import", str(SAMPLES / "symmetric-key-group.yaml"))
    key = dps.ok("enrollment-group", "compute-device-key", "contoso-sensors", "--registration-id", PUBLISHED_DEVICE).stdout.strip()
    assert key == PUBLISHED_DERIVED_KEY
    result = dps.json("provision", "--registration-id", PUBLISHED_DEVICE, "--symmetric-key", key)
    assert result["status"] == "assigned"
    assert result["registrationState"]["symmetricKey"] == {"enrollmentGroupId": "contoso-sensors"}
    assert dps.json("device", "show", PUBLISHED_DEVICE)["tags"] == {"fleet": "sensors"}


def test_x509_group_signing_certificate_is_the_file_beside_it(dps):
    dps.ok("import", str(SAMPLES / "x509-group.yaml"))
    group = dps.json("enrollment-group", "show", "contoso-cameras")
    primary = group["attestation"]["x509"]["signingCertificates"]["primary"]
    beside = load_certificates((SAMPLES / "x509-group-root.cert.pem").read_bytes(), source="x509-group-root.cert.pem")
    assert len(beside) == 1
    cert = beside[0]
    assert is_ca(cert)
    assert primary["info"]["sha1Thumbprint"] == sha1_thumbprint(cert)
    assert primary["info"]["subjectName"] == "CN=Contoso Sample Root CA"
    assert group["capabilities"] == {"iotEdge": True}
    assert check_key_strength(cert).ok and "P-256" in check_key_strength(cert).what
    days = (cert.not_valid_after_utc - cert.not_valid_before_utc).days
    assert 3649 <= days <= 3651, "the README says the root is valid 10 years"


def test_tpm_sample_holds_only_public_keys(dps):
    dps.ok("import", str(SAMPLES / "tpm-individual.yaml"))
    entry = dps.json("enrollment", "show", "boiler-0042")
    assert entry["attestation"]["type"] == "tpm"
    assert entry["attestation"]["tpm"]["endorsementKey"] == _doc("tpm-individual.yaml")["enrollments"][0]["attestation"]["tpm"]["endorsementKey"]
    assert entry["reprovisionPolicy"] == {"updateHubAssignment": True, "migrateDeviceData": False}
    assert not list(SAMPLES.glob("*.tpm")), "software TPM files hold private keys and must not be committed"
    for path in SAMPLES.iterdir():
        assert "PRIVATE KEY" not in path.read_text(encoding="utf-8", errors="replace"), f"{path.name} holds a private key"


def test_static_sample_lands_on_the_hub_outside_the_pool(dps):
    dps.ok("import", str(SAMPLES / "static-allocation.yaml"))
    key = dps.json("enrollment", "show", "qa-rig-07", "--show-keys")["attestation"]["symmetricKey"]["primaryKey"]
    for _ in range(2):
        result = dps.json("provision", "--registration-id", "qa-rig-07", "--symmetric-key", key)
        assert result["registrationState"]["assignedHub"] == "contoso-staging.azure-devices.net"


@pytest.mark.parametrize(
    ("region", "hub"),
    [("uksouth", "contoso-weu.azure-devices.net"), ("japaneast", "contoso-sea.azure-devices.net"), ("eastus2", "contoso-eus.azure-devices.net")],
)
def test_geolatency_sample_picks_the_nearest_hub(dps, region, hub):
    dps.ok("import", str(SAMPLES / "geolatency-allocation.yaml"))
    key = dps.ok("enrollment-group", "compute-device-key", "contoso-trackers", "--registration-id", "tracker-1001").stdout.strip()
    result = dps.json("provision", "--registration-id", "tracker-1001", "--symmetric-key", key, "--region", region)
    assert result["registrationState"]["assignedHub"] == hub


def test_custom_allocation_sample_names_a_webhook(dps):
    dps.ok("import", str(SAMPLES / "custom-allocation.yaml"))
    group = dps.json("enrollment-group", "show", "contoso-appliances")
    assert group["allocationPolicy"] == "custom"
    assert group["customAllocationDefinition"]["webhookUrl"].startswith("https://")
    assert group["customAllocationDefinition"]["apiVersion"] == "2021-10-01"
    assert len(group["iotHubs"]) == 2


def test_initial_twins_sample_reaches_the_hub_twin(dps):
    dps.ok("import", str(SAMPLES / "initial-twins.yaml"))
    entry = dps.json("enrollment", "show", "edge-gateway-01", "--show-keys")
    assert entry["capabilities"] == {"iotEdge": True}
    key = entry["attestation"]["symmetricKey"]["primaryKey"]
    dps.ok("provision", "--registration-id", "edge-gateway-01", "--symmetric-key", key)
    device = dps.json("device", "show", "edge-gateway-01")
    assert device["capabilities"] == {"iotEdge": True}
    assert device["tags"]["role"] == "gateway"
    assert device["properties"]["desired"]["modules"][0]["name"] == "opcua-publisher"
    group = dps.json("enrollment-group", "show", "contoso-meters")
    assert group["initialTwin"]["properties"]["desired"]["tariff"]["name"] == "dual-rate"


def test_commands_in_sample_comments_exist():
    """The `dpsctl ...` lines in the samples' comments and README name real commands."""
    from tests.helpers.docs import COMMAND_LINE as _COMMAND_LINE
    from tests.helpers.docs import code_in as _code_in
    from tests.helpers.docs import command_paths as _paths

    paths = _paths()
    examples = [(p, line) for p in FILES for line in p.read_text(encoding="utf-8").splitlines() if re.match(r"#\s{2,}\S", line)]
    examples += [(SAMPLES / "README.md", code) for code in _code_in((SAMPLES / "README.md").read_text(encoding="utf-8"))]
    assert len(examples) > 10
    for path, text in examples:
        for match in _COMMAND_LINE.finditer(text):
            words = match.group(1).split()
            if words[:1] == ["--db"]:
                words = words[2:]
            command: tuple[str, ...] = ("dpsctl",)
            for word in words:
                if (*command, word) not in paths:
                    break
                command = (*command, word)
            assert len(command) > 1, f"{path.name} shows `dpsctl {' '.join(words)}`, which is not a dpsctl command"
