"""The proof with real clients: the official Azure IoT Node packages (pinned in tests/server/node) against `dpsctl serve`.

One `dpsctl serve` process and one `node run.js` process run every scenario (tests/server/node/run.js); each
scenario is then its own test. Skipped, with the reason, only when Node/npm or the installed packages are missing
(install them with tests/server/node/install.sh).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.cli import Dps
from tests.helpers.constants import ID_SCOPE
from tests.helpers.server import start_serve
from tests.helpers.constants import HUB_A as HUB

NODE_DIR = Path(__file__).parent / "node"
PACKAGES = (
    "azure-iot-provisioning-device",
    "azure-iot-provisioning-device-http",
    "azure-iot-provisioning-device-mqtt",
    "azure-iot-security-symmetric-key",
    "azure-iot-security-x509",
    "azure-iot-provisioning-service",
    "azure-iot-http-base",
    "azure-iot-common",
)
# Devices first: the last scenario deletes the group device's registration record.
SCENARIOS = (
    "device-symmetric-individual",
    "device-symmetric-group",
    "device-x509-group",
    "device-wrong-key",
    "device-untrusted-certificate",
    "mqtt-device-symmetric-individual",
    "mqtt-device-symmetric-group",
    "mqtt-device-x509-group",
    "mqtt-device-wrong-key",
    "mqtt-device-untrusted-certificate",
    "service-enrollments",
    "service-groups",
    "service-bulk-and-query",
    "service-registration-states",
)


def _missing() -> str | None:
    for tool in ("node", "npm"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    absent = [p for p in PACKAGES if not (NODE_DIR / "node_modules" / p / "package.json").exists()]
    if absent:
        return f"the pinned Node packages are not installed ({', '.join(absent)}): run tests/server/node/install.sh"
    return None


pytestmark = pytest.mark.skipif(_missing() is not None, reason=_missing() or "")


def _pinned() -> dict[str, str]:
    return json.loads((NODE_DIR / "package.json").read_text())["dependencies"]


@pytest.fixture(scope="module")
def node_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Prepare a store with the CLI, start `dpsctl serve`, run every scenario with Node; their results."""
    work = tmp_path_factory.mktemp("node")
    store = work / "dps.json"
    dps = Dps(store)
    dps.ok("init", "--id-scope", ID_SCOPE)
    dps.ok("hub", "add", "hub-a")
    dps.ok("enrollment", "add", "node-individual", "--attestation", "symmetricKey")
    individual_key = dps.json("enrollment", "show", "node-individual", "--show-keys")["attestation"]["symmetricKey"]["primaryKey"]
    dps.ok("enrollment-group", "add", "node-fleet", "--attestation", "symmetricKey")
    group_device_key = dps.ok("enrollment-group", "compute-device-key", "node-fleet", "--registration-id", "node-group-device").stdout.strip()
    pki = work / "pki"
    pki.mkdir()
    dps.ok("cert", "create-root", "root", "--out", str(pki))
    dps.ok("cert", "create-intermediate", "inter", "--ca", str(pki / "root.cert.pem"), "--ca-key", str(pki / "root.key.pem"), "--out", str(pki))
    dps.ok("cert", "create-device", "node-x509-device", "--ca", str(pki / "inter.fullchain.pem"), "--ca-key", str(pki / "inter.key.pem"), "--out", str(pki))
    dps.ok("enrollment-group", "add", "node-factory", "--attestation", "x509", "--signing-cert", str(pki / "root.cert.pem"))
    dps.ok("cert", "create-root", "stranger", "--out", str(pki))
    dps.ok("cert", "create-device", "node-intruder", "--ca", str(pki / "stranger.cert.pem"), "--ca-key", str(pki / "stranger.key.pem"), "--out", str(pki))

    host = f"127.{50 + os.getpid() % 50}.0.1"  # MQTT's port is fixed (8883): an address of our own avoids collisions
    proc, port, banner, log = start_serve(store, "--host", host, "--mqtt-port", "8883")
    try:
        ca = work / "dpsctl-serve" / "ca.pem"
        service_key = dps.ok("service", "connection-string", "--port", str(port)).stdout.strip().rsplit("SharedAccessKey=", 1)[1]
        config = {
            "host": host,
            "port": port,
            "idScope": ID_SCOPE,
            "hub": HUB,
            "serviceKey": service_key,
            "groupId": "node-fleet",
            "keys": [base64.b64encode(os.urandom(32)).decode(), base64.b64encode(os.urandom(32)).decode()],
            "devices": {
                "individual": {"registrationId": "node-individual", "key": individual_key},
                "group": {"registrationId": "node-group-device", "key": group_device_key},
                "wrongKey": {"registrationId": "node-individual", "key": base64.b64encode(os.urandom(32)).decode()},
                "x509": {"registrationId": "node-x509-device", "cert": str(pki / "node-x509-device.fullchain.pem"), "key": str(pki / "node-x509-device.key.pem")},
                "untrusted": {"registrationId": "node-intruder", "cert": str(pki / "node-intruder.fullchain.pem"), "key": str(pki / "node-intruder.key.pem")},
            },
        }
        config_file = work / "config.json"
        config_file.write_text(json.dumps(config))
        env = {**os.environ, "NODE_EXTRA_CA_CERTS": str(ca)}
        run = subprocess.run(["node", "run.js", str(config_file), *SCENARIOS], cwd=NODE_DIR, env=env, capture_output=True, text=True, timeout=300)
        results = {}
        for line in run.stdout.splitlines():
            if line.startswith("{"):
                doc = json.loads(line)
                results[doc["scenario"]] = doc
        registrations = {r["registrationId"]: r for r in dps.json("registration", "list")}
        devices = {d["deviceId"] for d in dps.json("device", "list")}
    finally:
        proc.terminate()
        proc.communicate(timeout=30)
    return {"results": results, "stderr": run.stderr, "log": log.read_text(), "registrations": registrations, "devices": devices, "returncode": proc.returncode, "banner": banner}


def test_the_node_packages_are_pinned():
    pinned = _pinned()
    assert set(PACKAGES) <= set(pinned)
    assert all(version[0].isdigit() for version in pinned.values()), pinned  # exact versions, no ranges
    lock = json.loads((NODE_DIR / "package-lock.json").read_text())
    for name in PACKAGES:
        assert lock["packages"][f"node_modules/{name}"]["version"] == pinned[name]
        installed = json.loads((NODE_DIR / "node_modules" / name / "package.json").read_text())["version"]
        assert installed == pinned[name], f"{name} {installed} is installed, {pinned[name]} pinned: rerun install.sh"


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_scenario(node_run, scenario):
    result = node_run["results"].get(scenario)
    assert result is not None, f"node printed nothing for {scenario}: {node_run['stderr'][-3000:]}"
    assert result["ok"], result["detail"]


def test_the_store_accounts_for_the_node_devices(node_run):
    registrations = node_run["registrations"]
    assert registrations["node-individual"]["status"] == "assigned"
    assert registrations["node-x509-device"]["x509"]["enrollmentGroupId"] == "node-factory"
    # The group device's record was deleted through the service client (service-registration-states); its hub
    # identity stays, as in DPS.
    assert "node-group-device" not in registrations
    assert {"node-individual", "node-group-device", "node-x509-device"} == node_run["devices"]
    assert "node-intruder" not in registrations


def test_the_server_logged_every_request_and_stopped_cleanly(node_run):
    log = node_run["log"]
    assert node_run["returncode"] == 0, log
    assert " PUT /0ne00000A0A/registrations/node-individual/register 202 " in log
    assert " PUT /0ne00000A0A/registrations/node-individual/register 401 " in log  # the wrong key
    assert " MQTT PUT register node-individual 202 " in log and " MQTT PUT register node-individual 401 " in log
    assert " MQTT GET operationstatus node-x509-device 200 " in log
    assert " PUT /0ne00000A0A/registrations/node-intruder/register 401 " in log  # the untrusted certificate: DPS's 401
    assert " MQTT PUT register node-intruder 401 " in log
    assert " POST /enrollmentgroups/node-group/attestationmechanism 200 " in log
    assert " POST /enrollments/ 200 " in log  # bulk, with the trailing slash
    assert "Traceback" not in log
    assert log.strip().splitlines()[-1].endswith("requests")
