"""docs/az-mapping.md is generated from the app, is current, and covers az's whole data-plane surface (reference §A.2)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MAPPING = ROOT / "docs" / "az-mapping.md"

RESOURCE = ("--dps-name", "-n", "--resource-group", "-g", "--login", "-l", "--auth-type")
ENTRY = (
    "--primary-key", "--pk", "--secondary-key", "--sk", "--certificate-path", "--cp", "--secondary-certificate-path", "--scp",
    "--provisioning-status", "--ps", "--initial-twin-tags", "--tags", "--initial-twin-properties", "--props",
    "--reprovision-policy", "--rp", "--allocation-policy", "--ap", "--iot-hubs", "--ih", "--webhook-url", "--wh",
    "--api-version", "--av", "--edge-enabled", "--ee",
)
INDIVIDUAL = ("--enrollment-id", "--eid", "--endorsement-key", "--ek", "--device-id", "--device-information", "--info", *ENTRY)
GROUP = ("--enrollment-id", "--eid", "--group-id", "--gid", "--root-ca-name", "--ca-name", "--cn", "--secondary-root-ca-name", "--scn", *ENTRY)
REMOVE = ("--etag", "-e", "--remove-certificate", "--rc", "--remove-secondary-certificate", "--rsc")

# az's surface as reference §A.2 lists it: command (after `az iot`) -> its options.
SURFACE: dict[str, tuple[str, ...]] = {
    "dps enrollment create": (*INDIVIDUAL, "--attestation-type", "--at", *RESOURCE),
    "dps enrollment list": ("--top", *RESOURCE),
    "dps enrollment show": ("--enrollment-id", "--eid", "--show-keys", "--keys", *RESOURCE),
    "dps enrollment update": (*INDIVIDUAL, *REMOVE, *RESOURCE),
    "dps enrollment delete": ("--enrollment-id", "--eid", "--etag", "-e", *RESOURCE),
    "dps enrollment registration show": ("--enrollment-id", "--eid", *RESOURCE),
    "dps enrollment registration delete": ("--enrollment-id", "--eid", "--etag", "-e", *RESOURCE),
    "dps enrollment-group create": (*GROUP, *RESOURCE),
    "dps enrollment-group list": ("--top", *RESOURCE),
    "dps enrollment-group show": ("--enrollment-id", "--eid", "--group-id", "--gid", "--show-keys", "--keys", *RESOURCE),
    "dps enrollment-group update": (*GROUP, *REMOVE, *RESOURCE),
    "dps enrollment-group delete": ("--enrollment-id", "--eid", "--gid", "--etag", "-e", *RESOURCE),
    "dps enrollment-group compute-device-key": ("--registration-id", "--rid", "--symmetric-key", "--key", "--enrollment-id", "--eid", *RESOURCE),
    "dps enrollment-group registration list": ("--enrollment-id", "--eid", "--top", *RESOURCE),
    "dps enrollment-group registration show": ("--registration-id", "--rid", *RESOURCE),
    "dps enrollment-group registration delete": ("--registration-id", "--rid", "--etag", "-e", *RESOURCE),
    "dps registration list": ("--enrollment-id", "--eid", "--top", *RESOURCE),
    "dps registration show": ("--registration-id", "--rid", *RESOURCE),
    "dps registration delete": ("--registration-id", "--rid", "--etag", "-e", *RESOURCE),
    "dps compute-device-key": ("--registration-id", "--rid", "--symmetric-key", "--key", "--enrollment-id", "--eid", *RESOURCE),
    "dps linked-hub create": ("--dps-name", "--resource-group", "-g", "--connection-string", "--cs", "--hub-name", "--hn", "--hub-resource-group", "--hrg", "--allocation-weight", "--apply-allocation-policy", "--no-wait"),
    "dps linked-hub list": ("--dps-name", "-g"),
    "dps linked-hub show": ("--dps-name", "-g", "--linked-hub"),
    "dps linked-hub update": ("--dps-name", "-g", "--linked-hub", "--allocation-weight", "--apply-allocation-policy", "--no-wait"),
    "dps linked-hub delete": ("--dps-name", "-g", "--linked-hub", "--no-wait"),
    "dps certificate create": ("--dps-name", "-g", "--certificate-name", "--name", "-n", "--path", "-p", "--verified", "-v"),
    "dps certificate list": ("--dps-name", "-g"),
    "dps certificate show": ("--dps-name", "-g", "--certificate-name", "--name", "-n"),
    "dps certificate update": ("--dps-name", "-g", "--name", "-n", "--path", "-p", "--etag", "-e", "--verified", "-v"),
    "dps certificate delete": ("--dps-name", "-g", "--name", "-n", "--etag", "-e"),
    "dps certificate generate-verification-code": ("--dps-name", "-g", "--name", "-n", "--etag", "-e"),
    "dps certificate verify": ("--dps-name", "-g", "--name", "-n", "--path", "-p", "--etag", "-e"),
    "dps connection-string show": ("-n", "--dps-name", "-g", "--policy-name", "--pn", "--key-type", "--kt", "--all"),
    "device registration create": (
        "--registration-id", "--rid", "--id-scope", "--scope", "--dps-name", "-n", "--login", "-l", "--auth-type", "-g",
        "--enrollment-group-id", "--gid", "--symmetric-key", "--key", "--compute-key", "--ck", "--certificate-file-path", "--cp",
        "--key-file-path", "--kp", "--passphrase", "--pass", "--payload", "--provisioning-host", "--host",
    ),
}


def _sections(text: str) -> dict[str, str]:
    """The mapping's option tables, by az command."""
    parts = re.split(r"^### `az iot (.+?)`$", text, flags=re.M)
    return {parts[i]: parts[i + 1] for i in range(1, len(parts), 2)}


def test_the_mapping_is_generated_from_the_app_and_current() -> None:
    from dpsctl.cli.azmap import render

    assert MAPPING.read_text() == render(), "docs/az-mapping.md is stale: python -m dpsctl.cli.azmap > docs/az-mapping.md"


@pytest.mark.parametrize("az_command", sorted(SURFACE))
def test_every_az_command_and_option_is_accepted_and_has_a_row(az_command: str) -> None:
    assert not_accepted(az_command) == set()
    sections = _sections(MAPPING.read_text())
    assert az_command in sections, f"docs/az-mapping.md has no section for az iot {az_command}"
    assert f"| `az iot {az_command}` |" in MAPPING.read_text()
    rows = [line for line in sections[az_command].splitlines() if line.startswith("| `")]
    for option in SURFACE[az_command]:
        assert any(f"`{option}`" in row.split(" | ")[0] for row in rows), f"az iot {az_command} {option} has no row"


def not_accepted(az_command: str) -> set[str]:
    """The options of az's surface that dpsctl's command at az's path does not accept."""
    from dpsctl.cli.az_compat import accepted_names, dpsctl_path
    from dpsctl.cli.azmap import resolve

    return set(SURFACE[az_command]) - set(accepted_names(resolve(dpsctl_path(az_command))))


def test_a_missing_alias_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """The checks can fail: drop the alias of `enrollment show` and its az options are reported, and the mapping changes."""
    import dpsctl.cli.az_aliases as table
    from dpsctl.cli.azmap import render

    assert not_accepted("dps enrollment show") == set()
    monkeypatch.setattr(table, "ALIASES", tuple(spec for spec in table.ALIASES if spec.target != "enrollment show"))
    assert {"--eid", "--keys", "--dps-name", "--login"} <= not_accepted("dps enrollment show")
    assert "### `az iot dps enrollment show`" not in render()


def test_every_alias_is_exercised_by_a_test() -> None:
    """Each az command and option name of the mapping is typed in an alias test or in the transcript."""
    from dpsctl.cli.azmap import rows

    here = Path(__file__).parent
    typed = (here / "test_az_aliases.py").read_text() + (here / "az_transcript.sh").read_text()
    for az_command, _, options in rows():
        words = az_command.split()[1:] if az_command.startswith("dps ") else az_command.split()
        as_args = ", ".join(f'"{w}"' for w in words)
        assert as_args in typed or f"az iot {az_command} " in typed, f"az iot {az_command} is not exercised"
        for names, _ in options:
            for name in re.findall(r"`([^`]+)`", names):
                assert f'"{name}"' in typed or f" {name} " in typed, f"az iot {az_command} {name} is not exercised"
