"""The `az iot dps` data-plane commands and options, and the dpsctl command and parameter each one means.

Read by `az_compat.install` (which makes them work) and `azmap` (which writes docs/az-mapping.md from the
loaded app). Paths are written after `az iot`. `linked-hub`, `certificate`, `connection-string` and
`device registration create` are not here: their modules speak az's vocabulary themselves.
"""

from __future__ import annotations

from dpsctl.cli.az_compat import AzCommand
from dpsctl.cli.az_compat import AzOption as O

# Every data-plane command takes these (az: azext_iot/_params.py); one store is one DPS.
RESOURCE = (
    O(("--dps-name", "-n"), how="resource"),
    O(("--resource-group", "-g"), how="resource"),
    O(("--auth-type",), how="auth"),
    O(("--login", "-l"), how="login"),
)
ETAG = O(("--etag", "-e"), "etag")
SHOW_KEYS = O(("--show-keys", "--keys"), "show_keys", how="flag")
TOP = O(("--top",), how="top")


def _entry(group: bool, update: bool) -> tuple[O, ...]:
    """The options `enrollment create|update` and `enrollment-group create|update` share."""
    status = O(
        ("--provisioning-status", "--ps"), "enabled" if update else "disabled", how="enabled" if update else "disabled"
    )
    options = [
        O(("--primary-key", "--pk"), "primary_key"),
        O(("--secondary-key", "--sk"), "secondary_key"),
        O(("--certificate-path", "--cp"), "signing_cert" if group else "cert"),
        O(("--secondary-certificate-path", "--scp"), "secondary_signing_cert" if group else "secondary_cert"),
        status,
        O(("--initial-twin-tags", "--tags"), "twin_tags"),
        O(("--initial-twin-properties", "--props"), "twin_desired"),
        O(("--reprovision-policy", "--rp"), "reprovision_policy"),
        O(("--allocation-policy", "--ap"), "allocation_policy"),
        O(("--iot-hubs", "--ih"), "hub", how="many"),
        O(("--webhook-url", "--wh"), "webhook_url"),
        O(("--api-version", "--av"), "api_version"),
        O(("--edge-enabled", "--ee"), "edge", how="bool"),
    ]
    if group:
        options += [
            O(("--root-ca-name", "--ca-name", "--cn"), "ca_ref"),
            O(("--secondary-root-ca-name", "--secondary-ca-name", "--scn"), "secondary_ca_ref"),
        ]
    else:
        options += [
            O(("--endorsement-key", "--ek"), "endorsement_key"),
            O(("--device-id",), "device_id"),
            O(("--device-information", "--info"), "device_information"),
        ]
    if update:
        options += [
            ETAG,
            O(("--remove-certificate", "--rc"), "remove_cert", how="flag"),
            O(("--remove-secondary-certificate", "--rsc"), "remove_secondary_cert", how="flag"),
        ]
    else:
        options.append(SHOW_KEYS)
    return (*options, *RESOURCE)


EID = O(("--enrollment-id", "--eid"), "registration_id")
GID = O(("--enrollment-id", "--eid", "--group-id", "--gid"), "group_id")
RID = O(("--registration-id", "--rid"), "registration_id")

ALIASES: tuple[AzCommand, ...] = (
    # individual enrollments
    AzCommand(
        "enrollment add",
        ("dps enrollment create",),
        (EID, O(("--attestation-type", "--at"), "attestation"), *_entry(False, False)),
    ),
    AzCommand("enrollment show", ("dps enrollment show",), (EID, SHOW_KEYS, *RESOURCE)),
    AzCommand("enrollment list", ("dps enrollment list",), (TOP, SHOW_KEYS, *RESOURCE)),
    AzCommand("enrollment update", ("dps enrollment update",), (EID, SHOW_KEYS, *_entry(False, True))),
    AzCommand("enrollment delete", ("dps enrollment delete",), (EID, ETAG, *RESOURCE)),
    # enrollment groups
    AzCommand("enrollment-group add", ("dps enrollment-group create",), (GID, *_entry(True, False))),
    AzCommand("enrollment-group show", ("dps enrollment-group show",), (GID, SHOW_KEYS, *RESOURCE)),
    AzCommand("enrollment-group list", ("dps enrollment-group list",), (TOP, SHOW_KEYS, *RESOURCE)),
    AzCommand("enrollment-group update", ("dps enrollment-group update",), (GID, SHOW_KEYS, *_entry(True, True))),
    AzCommand("enrollment-group delete", ("dps enrollment-group delete",), (GID, ETAG, *RESOURCE)),
    AzCommand(
        "enrollment-group compute-device-key",
        ("dps enrollment-group compute-device-key", "dps compute-device-key"),
        (
            GID,
            O(("--registration-id", "--rid"), "registration_id"),
            O(("--symmetric-key", "--key"), "group_key"),
            *RESOURCE,
        ),
    ),
    # registration records: az reaches them from the enrollment (its ID is the registration ID) or the group
    AzCommand(
        "registration show",
        ("dps enrollment registration show", "dps enrollment-group registration show", "dps registration show"),
        (O(("--enrollment-id", "--eid"), "registration_id"), RID, *RESOURCE),
    ),
    AzCommand(
        "registration delete",
        ("dps enrollment registration delete", "dps enrollment-group registration delete", "dps registration delete"),
        (O(("--enrollment-id", "--eid"), "registration_id"), RID, ETAG, *RESOURCE),
    ),
    AzCommand(
        "registration list",
        ("dps enrollment-group registration list", "dps registration list"),
        (O(("--enrollment-id", "--eid", "--group-id", "--gid"), "enrollment_group"), TOP, *RESOURCE),
    ),
)
