"""An `az iot dps` script from Microsoft's quickstarts runs against dpsctl with only the prefix changed.

tests/cli/az_transcript.sh is written for az. Here its prefix is replaced, it runs through the installed
`dpsctl` under `set -euo pipefail` against a fresh store (az's default output: JSON), and the store it
leaves is checked record by record.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from dpsctl.store import open_store

SCRIPT = Path(__file__).with_name("az_transcript.sh")
BIN = Path(sys.executable).parent / "dpsctl"
AZ_LINE = re.compile(r"\baz iot (dps|device registration create)\b")


def as_dpsctl(text: str) -> str:
    """The script with az's prefix replaced, and nothing else changed."""
    text = text.replace("az iot device registration create", "dpsctl device registration create")
    return text.replace("az iot dps", "dpsctl")


def test_the_script_is_az_as_the_quickstarts_write_it() -> None:
    lines = [line for line in SCRIPT.read_text().splitlines() if AZ_LINE.search(line)]
    assert len(lines) >= 40
    assert "dpsctl enrollment" not in SCRIPT.read_text()  # the az form only; dpsctl appears for certificate files
    assert not AZ_LINE.search(as_dpsctl(SCRIPT.read_text()))


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_az_script_runs_unchanged_but_for_the_prefix(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    store = tmp_path / "dps.json"
    hub_key = base64.b64encode(b"hub-1-key" * 4).decode()
    preamble = "set -euo pipefail\n"
    if not BIN.exists():  # an uninstalled checkout: the same code, through the module
        preamble += f'dpsctl() {{ "{sys.executable}" -m dpsctl "$@"; }}\n'
    env = {k: v for k, v in os.environ.items() if not k.startswith("DPSCTL_")}
    env.update(
        PATH=f"{BIN.parent}{os.pathsep}{env.get('PATH', '')}",
        DPSCTL_DB=str(store),
        DPSCTL_OUTPUT="json",
        WORK=str(work),
        HUB1_CS=f"HostName=contoso-hub-1.azure-devices.net;SharedAccessKeyName=iothubowner;SharedAccessKey={hub_key}",
    )
    script = tmp_path / "transcript.sh"
    script.write_text(preamble + as_dpsctl(SCRIPT.read_text()))
    done = subprocess.run(["bash", str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, (done.stdout[-3000:], done.stderr[-3000:])
    assert "Traceback" not in done.stderr

    with open_store(store) as opened, opened.transaction() as tx:
        hubs = {d["name"]: d for d in tx.scan("hubs")}
        enrollments = {d["registrationId"]: d for d in tx.scan("enrollments")}
        groups = {d["enrollmentGroupId"]: d for d in tx.scan("groups")}
        registrations = {d["registrationId"]: d for d in tx.scan("registrations")}
        cas = {d["name"]: d for d in tx.scan("cas")}

    hub1, hub2 = "contoso-hub-1.azure-devices.net", "contoso-hub-2.azure-devices.net"
    assert set(hubs) == {hub1, hub2}  # contoso-hub-3 was linked and unlinked
    assert (hubs[hub1]["allocationWeight"], hubs[hub1]["applyAllocationPolicy"]) == (2, True)
    assert hubs[hub1]["connectionString"].endswith(hub_key)
    assert (hubs[hub2]["allocationWeight"], hubs[hub2]["applyAllocationPolicy"], hubs[hub2]["location"]) == (3, True, "westus")

    assert set(enrollments) == {"sim-device-002", "x509-device-002"}  # sim-device-001 and tpm-device-001 deleted
    sim = enrollments["sim-device-002"]
    assert sim["deviceId"] == "thermostat-002" and sim["provisioningStatus"] == "enabled"
    assert sim["initialTwin"] == {"tags": {"location": {"region": "EU"}}, "properties": {"desired": {"telemetryInterval": 30}}}
    assert sim["capabilities"] == {"iotEdge": True} and sim["iotHubs"] == [hub1, hub2] and sim["allocationPolicy"] == "hashed"
    assert sim["reprovisionPolicy"] == {"updateHubAssignment": True, "migrateDeviceData": False}
    assert enrollments["x509-device-002"]["attestation"]["type"] == "x509"

    assert set(groups) == {"contoso-sensors", "contoso-x509"}
    sensors = groups["contoso-sensors"]
    assert sensors["attestation"]["type"] == "symmetricKey" and sensors["iotHubs"] == [hub1, hub2]
    assert sensors["initialTwin"] == {"properties": {"desired": {"firmware": "1.2.0"}}} and sensors["capabilities"] == {"iotEdge": False}
    x509_group = groups["contoso-x509"]
    assert x509_group["attestation"]["x509"]["caReferences"] == {"primary": "contoso-root-ca"}
    assert (x509_group["allocationPolicy"], x509_group["iotHubs"]) == ("static", [hub2])

    assert set(registrations) == {"sim-device-002", "sensor-001", "sensor-002", "sensor-003", "x509-device-001", "x509-device-002"}
    assert all(d["status"] == "assigned" for d in registrations.values())
    assert registrations["sim-device-002"]["deviceId"] == "thermostat-002"
    assert registrations["x509-device-001"]["assignedHub"] == hub2
    assert {registrations[f"sensor-00{n}"]["assignedHub"] for n in (1, 2, 3)} <= {hub1, hub2}

    assert set(cas) == {"contoso-root-ca"} and cas["contoso-root-ca"]["isVerified"] is True

    # what the script printed is az's JSON and TSV: the captures above were used; here, two of the lines' output
    assert "contoso-hub-1.azure-devices.net\ncontoso-hub-2.azure-devices.net\n" in done.stdout  # linked-hub list -o tsv
    assert done.stdout.rstrip().endswith("contoso-root-ca")  # the last line, with --login
