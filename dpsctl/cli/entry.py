"""Options and rendering shared by `enrollment` and `enrollment-group` (the two halves of the enrollment list)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any

import typer

from dpsctl.cli.context import (
    Command,
    EtagOpt,
    OutputOpt,
    SharedOptions,
    ShowKeysOpt,
    json_arg,
    now,
    read_file,
    secret_option,
    session,
    shared_options,
)
from dpsctl.cli.render import Output, emit, info
from dpsctl.core.errors import InvalidInput

if TYPE_CHECKING:  # for annotations only: the core's enrollment code is slow to load, and `--help` needs none of it
    from dpsctl.core.credentials import CredentialInput
    from dpsctl.core.enrollments import AnyEnrollment, EnrollmentOptions

# The core and the store are imported inside the commands that use them: loading this module, for its --help or
# for another of its commands, stays cheap (tests/test_startup.py); each command loads what it needs.

AttestationOpt = Annotated[
    str,
    typer.Option(
        "--attestation",
        metavar="symmetricKey|x509|tpm",
        help="Attestation type: symmetricKey, x509 or tpm (groups: symmetricKey or x509).",
    ),
]


def _key_option(which: str, help_text: str) -> object:
    """--primary-key or --secondary-key: a secret (the value, @FILE or -)."""
    return secret_option(f"--{which}-key", f"{which} key", help_text, metavar="KEY")


PrimaryKeyOpt = Annotated[str | None, _key_option("primary", "Base64 primary key (16-64 bytes); generated if absent.")]
SecondaryKeyOpt = Annotated[str | None, _key_option("secondary", "Base64 secondary key; generated if absent.")]
NewPrimaryKeyOpt = Annotated[
    str | None, _key_option("primary", "New Base64 primary key (16-64 bytes); the stored one is kept if absent.")
]
NewSecondaryKeyOpt = Annotated[
    str | None, _key_option("secondary", "New Base64 secondary key; the stored one is kept if absent.")
]
EdgeOpt = Annotated[bool | None, typer.Option("--edge/--no-edge", help="The device is an IoT Edge device.")]
ReprovisionOpt = Annotated[
    str | None,
    typer.Option(
        "--reprovision-policy",
        help="reprovisionandmigratedata (migrate, the default), reprovisionandresetdata (reset) or never.",
    ),
]
DeviceInfoOpt = Annotated[
    str | None,
    typer.Option(
        "--device-information",
        metavar="JSON|@FILE",
        help="Optional device information kept with the enrollment (a JSON object).",
    ),
]
RemoveCertOpt = Annotated[
    bool,
    typer.Option(
        "--remove-certificate",
        "--rc",
        hidden=True,
        help="X.509: drop the primary certificate (a lone secondary becomes the primary).",
    ),
]
RemoveSecondaryCertOpt = Annotated[
    bool,
    typer.Option("--remove-secondary-certificate", "--rsc", hidden=True, help="X.509: drop the secondary certificate."),
]
AddDisabledOpt = Annotated[bool, typer.Option("--disabled", help="Create the entry disabled.")]
EnabledOpt = Annotated[bool | None, typer.Option("--enabled/--disabled", help="Enable or disable the entry.")]


def _text(*names: str, **settings: Any) -> tuple[Any, None]:
    """An optional text option as `shared_options` takes it (None unless given)."""
    return Annotated[str | None, typer.Option(*names, **settings)], None


# The allocation and initial-twin options of `add` and `update`, the same for enrollments and groups: declared once.
# The command takes them as `**allocation` and hands them on to `options`.
ALLOCATION_OPTIONS: SharedOptions = {
    "hub": (Annotated[list[str] | None, typer.Option("--hub", help="A linked hub the entry may use.")], None),
    "allocation_policy": _text(
        "--allocation-policy",
        metavar="hashed|geoLatency|static|custom",
        help="hashed, geoLatency, static or custom (default: the service's).",
    ),
    "webhook_url": _text("--webhook-url", help="Custom allocation webhook URL (http or https)."),
    "allocation_command": _text(
        "--allocation-command",
        help="Custom allocation by a local command (no shell): request JSON on stdin, answer on stdout.",
    ),
    "api_version": _text(
        "--api-version",
        help="Custom allocation API version, kept in customAllocationDefinition and so in the enrollment the webhook receives (default 2021-10-01; at least 2018-09-01-preview).",
    ),
    "initial_twin": _text(
        "--initial-twin",
        metavar="JSON|@FILE",
        help='Initial twin as JSON, @FILE or FILE: {"tags": {...}, "properties": {"desired": {...}}}.',
    ),
    # az's two halves of the initial twin (az-only spellings, hidden: dpsctl's own is --initial-twin); each
    # replaces its part.
    "twin_tags": _text(
        "--initial-twin-tags",
        "--tags",
        hidden=True,
        help="Replaces the initial twin's tags and keeps its desired properties (JSON, az's single-quoted JSON, or a file; dpsctl's own is --initial-twin).",
    ),
    "twin_desired": _text(
        "--initial-twin-properties",
        "--props",
        hidden=True,
        help="Replaces the initial twin's desired properties and keeps its tags (JSON, az's single-quoted JSON, or a file; dpsctl's own is --initial-twin).",
    ),
}


# The other options `add` and `update` share for enrollments and groups: the keys (just before the command's
# certificate options), then, after the command's own, the entry's state and the output.
ADD_KEYS: SharedOptions = {"primary_key": (PrimaryKeyOpt, None), "secondary_key": (SecondaryKeyOpt, None)}
UPDATE_KEYS: SharedOptions = {"primary_key": (NewPrimaryKeyOpt, None), "secondary_key": (NewSecondaryKeyOpt, None)}
PRINTED: SharedOptions = {"show_keys": (ShowKeysOpt, False), "output": (OutputOpt, Output.table)}
ADD_TAIL: SharedOptions = {
    "edge": (EdgeOpt, None),
    "disabled": (AddDisabledOpt, False),
    "reprovision_policy": (ReprovisionOpt, None),
} | PRINTED
UPDATE_TAIL: SharedOptions = {
    "edge": (EdgeOpt, None),
    "enabled": (EnabledOpt, None),
    "reprovision_policy": (ReprovisionOpt, None),
    "remove_cert": (RemoveCertOpt, False),
    "remove_secondary_cert": (RemoveSecondaryCertOpt, False),
    "etag": (EtagOpt, None),
} | PRINTED


def entry_options(*, update: bool, keys_before: str, allocation_before: str) -> Callable[[Command], Command]:
    """Give an `add` or `update` command the options enrollments and groups share; it takes them as `**shared`.

    The keys stand just before `keys_before`, ALLOCATION_OPTIONS just before `allocation_before`, the rest last.
    """

    def decorate(command: Command) -> Command:
        command = shared_options(UPDATE_TAIL if update else ADD_TAIL)(command)
        command = shared_options(ALLOCATION_OPTIONS, before=allocation_before)(command)
        return shared_options(UPDATE_KEYS if update else ADD_KEYS, before=keys_before)(command)

    return decorate


class SharedInput:
    """The shared options of an `add` or `update` command (see entry_options), sorted for their uses."""

    def __init__(self, shared: dict[str, Any]) -> None:
        settings = dict(shared)
        self.keys = (settings.pop("primary_key"), settings.pop("secondary_key"))
        self.removed = (settings.pop("remove_cert", False), settings.pop("remove_secondary_cert", False))
        self.etag: str | None = settings.pop("etag", None)
        self.show_keys: bool = settings.pop("show_keys")
        self.output: Output = settings.pop("output")
        if "disabled" in settings:  # add: created enabled unless --disabled
            settings["status"] = "disabled" if settings.pop("disabled") else None
        else:  # update: the status kept unless --enabled or --disabled
            enabled = settings.pop("enabled")
            settings["status"] = None if enabled is None else ("enabled" if enabled else "disabled")
        self._settings = settings

    def options(self, **own: Any) -> EnrollmentOptions:
        """The EnrollmentOptions, with the command's own fields (`device_id`, `device_information`)."""
        return options(**self._settings, **own)


def options(
    *,
    hub,
    allocation_policy,
    webhook_url,
    allocation_command,
    api_version,
    initial_twin,
    edge,
    reprovision_policy,
    status,
    device_id=None,
    twin_tags=None,
    twin_desired=None,
    device_information=None,
):
    """Build core EnrollmentOptions from parsed CLI values."""
    from dpsctl.core.enrollments import EnrollmentOptions

    if allocation_command:
        from dpsctl.core.validation import validate_allocation_command

        validate_allocation_command(allocation_command, "--allocation-command")
    twin = json_arg(initial_twin, "initial twin") if initial_twin is not None else None
    if twin is not None and not isinstance(twin, dict):
        raise InvalidInput('initial twin must be a JSON object like {"tags": {...}, "properties": {"desired": {...}}}')
    return EnrollmentOptions(
        twin_tags=_object(twin_tags, "initial twin tags"),
        twin_desired=_object(twin_desired, "initial twin properties"),
        device_information=_object(device_information, "device information"),
        device_id=device_id,
        hubs=tuple(hub) if hub else None,
        allocation_policy=allocation_policy,
        webhook_url=webhook_url,
        allocation_command=allocation_command,
        api_version=api_version,
        initial_twin=twin,
        iot_edge=edge,
        provisioning_status=status,
        reprovision_policy=reprovision_policy,
    )


def _object(value: str | None, what: str) -> dict[str, Any] | None:
    """A JSON object option (az's single-quoted JSON accepted too); None when not given."""
    if value is None:
        return None
    doc = json_arg(value, what, lenient=True)
    if not isinstance(doc, dict):
        raise InvalidInput(f'{what} must be a JSON object, like {{"key": "value"}}')
    return doc


def credentials(
    keys: tuple[str | None, str | None],
    certs: tuple[str | None, str | None],
    what: str,
    removed: tuple[bool, bool] = (False, False),
    *,
    endorsement_key: str | None = None,
    storage_root_key: str | None = None,
    ca_reference: str | None = None,
    secondary_ca_reference: str | None = None,
) -> CredentialInput:
    """The credential options as the core takes them: (primary, secondary) keys, certificate files (`what` names
    them in errors) and which certificates to remove; TPM keys and CA names as given."""
    from dpsctl.core.credentials import CredentialInput

    return CredentialInput(
        remove_certificate=removed[0],
        remove_secondary_certificate=removed[1],
        primary_key=keys[0],
        secondary_key=keys[1],
        certificate=cert_input(certs[0], what),
        secondary_certificate=cert_input(certs[1], f"secondary {what}"),
        endorsement_key=endorsement_key,
        storage_root_key=storage_root_key,
        ca_reference=ca_reference,
        secondary_ca_reference=secondary_ca_reference,
    )


def cert_input(path: str | None, what: str) -> tuple[bytes, str] | None:
    """Read a certificate file for the core (which parses PEM or DER)."""
    return (read_file(path, what), path) if path else None


def _keys_cell(doc: dict[str, Any]) -> str:
    from dpsctl.core.models import Attestation

    att = Attestation.from_stored(doc["attestation"], group="enrollmentGroupId" in doc)
    if att.type == "symmetricKey":
        return att.primary_key or "(hidden)"
    if att.type == "tpm":
        return (att.endorsement_key or "")[:16] + "..."
    if att.primary_cert:
        return "SHA1 " + att.primary_cert.info.get("sha1Thumbprint", "")
    return f"CA {att.primary_ca}"


def render_entries(docs: list[dict[str, Any]], output: Output, *, group: bool) -> None:
    """A list of enrollments or groups."""
    id_field = "enrollmentGroupId" if group else "registrationId"
    columns = ["GROUP ID" if group else "REGISTRATION ID", "ATTESTATION", "STATUS"]
    columns += [] if group else ["DEVICE ID"]
    columns += ["ALLOCATION", "HUBS", "REPROVISION", "CREDENTIAL"]

    def rows() -> list[tuple]:
        from dpsctl.core.models import ReprovisionPolicy

        out = []
        for d in docs:
            rp = d["reprovisionPolicy"]
            row = [d[id_field], d["attestation"]["type"], d["provisioningStatus"]]
            row += [] if group else [d.get("deviceId") or d["registrationId"]]
            row += [
                d.get("allocationPolicy") or "(service)",
                ", ".join(h.split(".")[0] for h in d.get("iotHubs", [])) or "(all)",
                ReprovisionPolicy(rp["updateHubAssignment"], rp["migrateDeviceData"]).name,
                _keys_cell(d),
            ]
            out.append(tuple(row))
        return out

    emit(
        docs, output, columns=columns, rows=rows, drop=("REPROVISION", "ALLOCATION", "CREDENTIAL", "DEVICE ID", "HUBS")
    )


def render_entry(doc: dict[str, Any], output: Output) -> None:
    """One enrollment or group (a FIELD/VALUE table, or the REST JSON)."""
    if output == Output.table:
        shown = {k: v for k, v in doc.items()}
        att = shown.get("attestation", {}).get("x509", {})
        for slot in ("clientCertificates", "signingCertificates"):
            for cert in att.get(slot, {}).values():
                cert.pop("certificate", None)  # the PEM body is noise in a table; -o json keeps it
        emit(shown, output)
    else:
        emit(doc, output)


# The store side of each command, the same for enrollments and groups (`group` says which).
def add(entry: AnyEnrollment, shared: SharedInput) -> None:
    """Store a new enrollment or group, built by the command, and print it."""
    from dpsctl.core.enrollments import add_entry

    with session(write=True) as tx:
        added = add_entry(tx, entry, now())
    render_entry(added.to_dict(show_keys=shared.show_keys), shared.output)


EntryStatusOpt = Annotated[str | None, typer.Option("--status", help="Only enabled or disabled entries.")]
GroupStatusOpt = Annotated[str | None, typer.Option("--status", help="Only enabled or disabled groups.")]
AttestationFilterOpt = Annotated[str | None, typer.Option("--attestation", help="Only this attestation type.")]


def list_command(*, group: bool) -> Callable[..., None]:
    """The `list` command of individual enrollments, or of groups."""

    def list_(
        status: EntryStatusOpt = None,
        attestation: AttestationFilterOpt = None,
        show_keys: ShowKeysOpt = False,
        output: OutputOpt = Output.table,
    ) -> None:
        from dpsctl.core.enrollments import list_entries

        with session() as tx:
            found = list_entries(tx, group=group, status=status, attestation=attestation)
            docs = [x.to_dict(show_keys=show_keys) for x in found]
        render_entries(docs, output, group=group)

    list_.__doc__ = "List enrollment groups." if group else "List individual enrollments."
    if group:  # the same option, its help naming groups (Typer reads the annotation, a string here, by its name)
        list_.__annotations__["status"] = "GroupStatusOpt"
    return list_


def update(entry_id: str, group: bool, opts: EnrollmentOptions, cred: CredentialInput, shared: SharedInput) -> None:
    """Change an enrollment or group (refused if its --etag is stale) and print it."""
    from dpsctl.core.enrollments import update_entry

    with session(write=True) as tx:
        entry = update_entry(tx, entry_id, group=group, opts=opts, cred=cred, etag=shared.etag, now=now())
    render_entry(entry.to_dict(show_keys=shared.show_keys), shared.output)


def delete(entry_id: str, group: bool, etag: str | None) -> None:
    """Delete an enrollment or group (refused if `etag` is stale) and say so."""
    from dpsctl.core.enrollments import delete_entry

    with session(write=True) as tx:
        entry = delete_entry(tx, entry_id, group=group, etag=etag)
    info(f"deleted enrollment{' group' if group else ''} {entry.id}")
