"""`dpsctl demo`: a real provisioning run on the current store, showing the commands it types."""

from __future__ import annotations

import io
import shlex
import sys
from contextlib import redirect_stdout
from pathlib import Path
from typing import Annotated

import typer

from dpsctl.cli.app import app
from dpsctl.cli.context import STATE
from dpsctl.cli.render import info
from dpsctl.core.errors import DpsError

# The core and the store are imported inside the commands that use them: loading this module, for its --help or
# for another of its commands, stays cheap (tests/test_startup.py); each command loads what it needs.

DEMO_DOCUMENT = """\
# Written by `dpsctl demo`: two hubs, a symmetric-key group, an X.509 group and a TPM device.
linkedHubs:
  - name: demo-hub-westeurope
    location: westeurope
  - name: demo-hub-eastus
    location: eastus
    allocationWeight: 2
enrollmentGroups:
  - enrollmentGroupId: demo-sensors
    attestation: {type: symmetricKey}
    initialTwin:
      tags: {fleet: sensors}
      properties: {desired: {telemetryInterval: 30}}
  - enrollmentGroupId: demo-cameras
    attestation:
      type: x509
      x509:
        signingCertificates:
          primary: {certificate: "__ROOT__"}
    allocationPolicy: geoLatency
enrollments:
  - registrationId: "__TPM_ID__"
    attestation: {type: tpm, tpm: {endorsementKey: "__EK__"}}
    allocationPolicy: static
    iotHubs: [demo-hub-westeurope]
"""


def _dpsctl(args: list[str], *, to_file: Path | None = None) -> None:
    """Run one dpsctl command in this process, echoing it as a user would type it (`> FILE`: stdout to a 0600 file)."""
    from dpsctl.cli.errors import run_guarded

    info("$ dpsctl " + shlex.join(args) + (f" > {shlex.quote(str(to_file))}" if to_file else ""))
    argv = ["--db", STATE.db, *args]
    out = io.StringIO()
    if to_file:
        with redirect_stdout(out):
            code = run_guarded(typer.main.get_command(app), argv, "dpsctl")
    else:
        code = run_guarded(typer.main.get_command(app), argv, "dpsctl")
        sys.stdout.flush()
    if code != 0:
        raise DpsError(f"demo step `dpsctl {shlex.join(args)}` failed with exit code {code}")
    if to_file:
        from dpsctl.core.safefiles import write_atomically

        write_atomically(to_file, out.getvalue().encode(), mode=0o600)


def register(app: typer.Typer) -> None:
    """Add `dpsctl demo` to the root app."""

    @app.command("demo")
    def demo(
        directory: Annotated[
            Path, typer.Option("--dir", metavar="DIR", help="Where the demo's test credentials go.")
        ] = Path("dpsctl-demo"),
    ) -> None:
        """Provision a symmetric-key, an X.509 and a TPM device against the current store (rerunnable)."""
        from dpsctl.core.tpm import create_tpm, load_tpm, save_tpm

        directory.mkdir(parents=True, exist_ok=True)
        d = str(directory)
        root = directory / "demo-root.cert.pem"
        if not root.exists():
            _dpsctl(["cert", "create-root", "demo-root", "--out", d])
        camera = directory / "camera-001.fullchain.pem"
        if not camera.exists():
            _dpsctl(
                [
                    "cert",
                    "create-device",
                    "camera-001",
                    "--ca",
                    str(root),
                    "--ca-key",
                    str(directory / "demo-root.key.pem"),
                    "--out",
                    d,
                ]
            )
        tpm_file = directory / "thermostat.tpm"
        if not tpm_file.exists():
            info(f"$ dpsctl tpm create {tpm_file}")
            save_tpm(create_tpm(), tpm_file)
        tpm = load_tpm(tpm_file)
        document = (
            DEMO_DOCUMENT.replace("__ROOT__", root.read_text().replace("\n", "\\n"))
            .replace("__TPM_ID__", tpm.registration_id)
            .replace("__EK__", tpm.endorsement_key)
        )
        doc_file = directory / "demo-enrollments.yaml"
        doc_file.write_text(document)
        _dpsctl(["import", str(doc_file)])
        for n in range(1, 4):
            # Three sensors, so that the weighted hash (eastus has weight 2) visibly spreads them.
            sensor = f"sensor-{n:03d}"
            # The key goes through a 0600 file, never the command line, where `ps` would show it.
            key_file = directory / f"{sensor}.key"
            _dpsctl(
                ["enrollment-group", "compute-device-key", "demo-sensors", "--registration-id", sensor],
                to_file=key_file,
            )
            _dpsctl(["provision", "--registration-id", sensor, "--symmetric-key", f"@{key_file}"])
        _dpsctl(
            [
                "provision",
                "--cert",
                str(camera),
                "--key",
                str(directory / "camera-001.key.pem"),
                "--region",
                "northeurope",
            ]
        )
        _dpsctl(["provision", "--tpm", str(tpm_file)])
        _dpsctl(["registration", "list"])
        _dpsctl(["device", "list"])
        _dpsctl(["stats"])
        from dpsctl.store.pglocation import redact

        info(
            f"\nthe store is {redact(STATE.db)}; the demo's test credentials are in {d}/. Next, try:\n"
            f"  dpsctl provision --registration-id sensor-001 --symmetric-key @{d}/sensor-001.key --explain\n"
            "  dpsctl registration list --query \"[?status=='assigned'].deviceId\" -o tsv"
        )
