"""Records of the enrollment list and the service, converted to and from the DPS REST (camelCase) shape."""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from dpsctl.core.errors import InvalidInput, NotFound
from dpsctl.core.ids import (
    hub_host_name,
    validate_device_id,
    validate_group_id,
    validate_id_scope,
    validate_registration_id,
)

AttestationType = Literal["symmetricKey", "x509", "tpm"]
ATTESTATION_TYPES: tuple[str, ...] = ("symmetricKey", "x509", "tpm")
ALLOCATION_POLICIES: tuple[str, ...] = ("hashed", "geoLatency", "static", "custom")
SERVICE_POLICIES: tuple[str, ...] = ("hashed", "geoLatency", "static")
PROVISIONING_STATUSES: tuple[str, ...] = ("enabled", "disabled")
DEFAULT_CUSTOM_API_VERSION = "2021-10-01"
MIN_CUSTOM_API_VERSION = "2018-09-01-preview"  # the oldest the service accepts (reference §1, SPEC-SVC)
MAX_TWIN_BYTES = 32 * 1024  # IoT Hub's limit for desired properties and tags, each; DPS documents none of its own

Json = dict[str, Any]


def _expect(doc: Any, kind: type | tuple[type, ...], where: str) -> Any:
    """Type-check one field of an input document, naming the field on failure."""
    if not isinstance(doc, kind) or (kind is int and isinstance(doc, bool)):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        wanted = {
            "dict": "an object",
            "list": "a list",
            "str": "a string",
            "bool": "true or false",
            "int": "an integer",
        }
        raise InvalidInput(f"{where} must be {wanted.get(names, names)}")
    return doc


def _check_keys(doc: Json, allowed: set[str], where: str) -> None:
    """Refuse fields we do not know, so that a typo in an import file is not silently dropped."""
    unknown = sorted(set(doc) - allowed)
    if unknown:
        raise InvalidInput(
            f"{where} has unknown field {unknown[0]!r}", hint=f"known fields: {', '.join(sorted(allowed))}"
        )


def _choice(value: Any, choices: tuple[str, ...], where: str) -> str:
    """Match an enum value case-insensitively (as az does) and return its canonical spelling."""
    if isinstance(value, str):
        for choice in choices:
            if choice.lower() == value.lower():
                return choice
    raise InvalidInput(f"{where} is {value!r}; expected one of: {', '.join(choices)}")


def filter_choice(value: str, choices: tuple[str, ...], where: str) -> str:
    """A list filter's value: like `_choice`, but a value that names nothing is not found (exit 3), as `show` says."""
    try:
        return _choice(value, choices, where)
    except InvalidInput:
        raise NotFound(f"there is no {where} {value!r}; expected one of: {', '.join(choices)}") from None


def require_named(found: bool, referenced: bool, what: str, hint: str) -> None:
    """A list filter naming a record: refused (exit 3) when no such record exists and nothing refers to it."""
    if not found and not referenced:
        raise NotFound(f"{what} does not exist", hint=hint)


# --------------------------------------------------------------------------- parts


@dataclass(frozen=True)
class ReprovisionPolicy:
    """What happens when a device that already has a registration registers again."""

    update_hub_assignment: bool = True
    migrate_device_data: bool = True

    PRESETS = {
        "reprovisionandmigratedata": (True, True),
        "migrate": (True, True),
        "reprovisionandresetdata": (True, False),
        "reset": (True, False),
        "never": (False, False),
    }

    @classmethod
    def from_name(cls, name: str) -> ReprovisionPolicy:
        """Build from the az CLI preset names (or the short forms migrate/reset)."""
        try:
            update, migrate = cls.PRESETS[name.lower()]
        except KeyError:
            raise InvalidInput(
                f"reprovision policy {name!r} is not known",
                hint="use reprovisionandmigratedata (migrate), reprovisionandresetdata (reset) or never",
            ) from None
        return cls(update, migrate)

    @property
    def name(self) -> str:
        """The az CLI preset name of this policy."""
        if not self.update_hub_assignment:
            return "never"
        return "reprovisionandmigratedata" if self.migrate_device_data else "reprovisionandresetdata"

    def to_dict(self) -> Json:
        """The DPS `reprovisionPolicy` object."""
        return {"updateHubAssignment": self.update_hub_assignment, "migrateDeviceData": self.migrate_device_data}

    @classmethod
    def from_dict(cls, doc: Any, where: str = "reprovisionPolicy") -> ReprovisionPolicy:
        """Parse the DPS `reprovisionPolicy` object."""
        _expect(doc, dict, where)
        _check_keys(doc, {"updateHubAssignment", "migrateDeviceData"}, where)
        update = _expect(doc.get("updateHubAssignment", True), bool, f"{where}.updateHubAssignment")
        migrate = _expect(doc.get("migrateDeviceData", True), bool, f"{where}.migrateDeviceData")
        return cls(update, migrate)


def _device_information(info: Any, where: str) -> Json:
    """optionalDeviceInformation: a JSON object within the one limit of values from outside (depth and size)."""
    from dpsctl.core.jsondepth import check_value

    return check_value(_expect(info, dict, f"{where}.optionalDeviceInformation"), f"{where}.optionalDeviceInformation")


def validate_initial_twin(doc: Any, where: str = "initialTwin") -> Json:
    """Check an initial twin `{"tags": {...}, "properties": {"desired": {...}}}` and return a clean copy."""
    from dpsctl.core.jsondepth import check_depth

    _expect(doc, dict, where)
    check_depth(doc, where)  # before json.dumps and deepcopy below, which recurse once per level
    _check_keys(doc, {"tags", "properties"}, where)
    twin: Json = {}
    if doc.get("tags") is not None:
        twin["tags"] = _expect(doc["tags"], dict, f"{where}.tags")
    if doc.get("properties") is not None:
        props = _expect(doc["properties"], dict, f"{where}.properties")
        _check_keys(props, {"desired"}, f"{where}.properties")
        desired = props.get("desired") or {}
        twin["properties"] = {"desired": _expect(desired, dict, f"{where}.properties.desired")}
    for part in ("tags", "properties"):
        size = len(json.dumps(twin.get(part, {}), separators=(",", ":")).encode())
        if size > MAX_TWIN_BYTES:
            raise InvalidInput(f"{where}.{part} is {size} bytes; the limit is {MAX_TWIN_BYTES} (IoT Hub's twin limit)")
    return copy.deepcopy(twin)


@dataclass(frozen=True)
class CustomAllocation:
    """Where a custom allocation decision comes from: a webhook URL, or (dpsctl only) a local command."""

    webhook_url: str | None = None
    api_version: str = DEFAULT_CUSTOM_API_VERSION
    allocation_command: str | None = None

    def to_dict(self) -> Json:
        """The DPS `customAllocationDefinition` object (plus dpsctl's `allocationCommand`)."""
        doc: Json = {"webhookUrl": self.webhook_url, "apiVersion": self.api_version}
        if self.allocation_command:
            doc["allocationCommand"] = self.allocation_command
        return doc

    @classmethod
    def from_dict(cls, doc: Any, where: str = "customAllocationDefinition") -> CustomAllocation:
        """Parse the DPS `customAllocationDefinition` object."""
        _expect(doc, dict, where)
        _check_keys(doc, {"webhookUrl", "apiVersion", "allocationCommand"}, where)
        url = doc.get("webhookUrl")
        command = doc.get("allocationCommand")
        if url is not None:
            validate_webhook_url(_expect(url, str, f"{where}.webhookUrl"), f"{where}.webhookUrl")
        if command is not None:
            validate_allocation_command(
                _expect(command, str, f"{where}.allocationCommand"), f"{where}.allocationCommand"
            )
        api = _expect(doc.get("apiVersion") or DEFAULT_CUSTOM_API_VERSION, str, f"{where}.apiVersion")
        return cls(url or None, api, command or None)


def validate_custom_api_version(version: str, where: str = "customAllocationDefinition.apiVersion") -> str:
    """A DPS api-version (`YYYY-MM-DD` or `YYYY-MM-DD-preview`) no older than 2018-09-01-preview; returned in lower case."""
    import re
    from datetime import date

    match = (
        re.fullmatch(r"(\d{4})-(\d{2})-(\d{2})(-preview)?", version.strip().lower())
        if isinstance(version, str)
        else None
    )
    try:
        day = date(int(match[1]), int(match[2]), int(match[3])) if match else None
    except ValueError:
        day = None
    hint = (
        f"use an api-version such as {DEFAULT_CUSTOM_API_VERSION} (the oldest DPS accepts is {MIN_CUSTOM_API_VERSION})"
    )
    if match is None or day is None:
        shown = repr(version[:40]) if isinstance(version, str) else "?"
        raise InvalidInput(f"{where} {shown} is not an api-version (YYYY-MM-DD or YYYY-MM-DD-preview)", hint=hint)
    # On the same day a preview comes before the stable version.
    if (day, match[4] is None) < (date(2018, 9, 1), False):
        raise InvalidInput(
            f"{where} {version!r} is older than {MIN_CUSTOM_API_VERSION}, the oldest DPS accepts", hint=hint
        )
    return version.strip().lower()


def validate_allocation_command(command: str, where: str = "allocation command") -> str:
    """An allocation command must split into a program and its arguments (it runs without a shell)."""
    import shlex

    if command:  # empty means "none", as for the webhook URL
        try:
            shlex.split(command)
        except ValueError as error:
            # Refused when stored, not at the first device's registration.
            raise InvalidInput(
                f"{where} cannot be parsed: {error}",
                hint="quote it as for a POSIX shell; it is split, never run by a shell",
            ) from None
    return command


def validate_webhook_url(url: str, where: str = "webhook URL") -> str:
    """A webhook must be an absolute http(s) URL with a host."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInput(f"{where} must be an http:// or https:// URL with a host name")
    return url


# --------------------------------------------------------------------------- attestation


@dataclass(frozen=True)
class CertificateRef:
    """An uploaded certificate (PEM) with the information DPS derives from it."""

    certificate: str
    info: Json

    def to_dict(self) -> Json:
        """The DPS `X509CertificateWithInfo` object."""
        return {"certificate": self.certificate, "info": dict(self.info)}


@dataclass(frozen=True)
class Attestation:
    """How a device proves itself: symmetric keys, X.509 certificates or CA references, or a TPM."""

    type: str
    primary_key: str | None = None
    secondary_key: str | None = None
    primary_cert: CertificateRef | None = None
    secondary_cert: CertificateRef | None = None
    primary_ca: str | None = None
    secondary_ca: str | None = None
    endorsement_key: str | None = None
    storage_root_key: str | None = None

    def to_dict(self, *, group: bool, show_keys: bool = True) -> Json:
        """The DPS `AttestationMechanism` object; symmetric keys only when `show_keys`."""
        doc: Json = {"type": self.type}
        if self.type == "symmetricKey":
            keys = {"primaryKey": self.primary_key, "secondaryKey": self.secondary_key} if show_keys else {}
            doc["symmetricKey"] = keys
        elif self.type == "x509":
            certs: Json = {}
            if self.primary_cert:
                certs["primary"] = self.primary_cert.to_dict()
            if self.secondary_cert:
                certs["secondary"] = self.secondary_cert.to_dict()
            x509: Json = {}
            if certs:
                x509["signingCertificates" if group else "clientCertificates"] = certs
            if self.primary_ca or self.secondary_ca:
                refs = {"primary": self.primary_ca}
                if self.secondary_ca:
                    refs["secondary"] = self.secondary_ca
                x509["caReferences"] = refs
            doc["x509"] = x509
        elif self.type == "tpm":
            tpm = {"endorsementKey": self.endorsement_key}
            if self.storage_root_key:
                tpm["storageRootKey"] = self.storage_root_key
            doc["tpm"] = tpm
        return doc

    @classmethod
    def from_dict(cls, doc: Any, *, group: bool, where: str = "attestation") -> Attestation:
        """Parse a stored or imported `AttestationMechanism` (certificates are re-parsed by the caller)."""
        _expect(doc, dict, where)
        _check_keys(doc, {"type", "symmetricKey", "x509", "tpm"}, where)
        kind = _choice(doc.get("type"), ("symmetricKey", "x509") if group else ATTESTATION_TYPES, f"{where}.type")
        if kind == "symmetricKey":
            keys = _expect(doc.get("symmetricKey") or {}, dict, f"{where}.symmetricKey")
            _check_keys(keys, {"primaryKey", "secondaryKey"}, f"{where}.symmetricKey")
            return cls(kind, primary_key=keys.get("primaryKey"), secondary_key=keys.get("secondaryKey"))
        if kind == "tpm":
            tpm = _expect(doc.get("tpm"), dict, f"{where}.tpm")
            _check_keys(tpm, {"endorsementKey", "storageRootKey"}, f"{where}.tpm")
            ek = _expect(tpm.get("endorsementKey"), str, f"{where}.tpm.endorsementKey")
            srk = tpm.get("storageRootKey")
            return cls(
                kind,
                endorsement_key=ek,
                storage_root_key=_expect(srk, str, f"{where}.tpm.storageRootKey") if srk else None,
            )
        x509 = _expect(doc.get("x509"), dict, f"{where}.x509")
        certs_field = "signingCertificates" if group else "clientCertificates"
        _check_keys(x509, {certs_field, "caReferences"} if group else {certs_field}, f"{where}.x509")
        certs = _expect(x509.get(certs_field) or {}, dict, f"{where}.x509.{certs_field}")
        refs = _expect(x509.get("caReferences") or {}, dict, f"{where}.x509.caReferences")
        return cls(
            kind,
            primary_cert=_cert_ref(certs.get("primary"), f"{where}.x509.{certs_field}.primary"),
            secondary_cert=_cert_ref(certs.get("secondary"), f"{where}.x509.{certs_field}.secondary"),
            primary_ca=refs.get("primary"),
            secondary_ca=refs.get("secondary"),
        )


def _cert_ref(doc: Any, where: str) -> CertificateRef | None:
    """Parse an `X509CertificateWithInfo`; `info` is recomputed from the certificate by the caller."""
    if doc is None:
        return None
    _expect(doc, dict, where)
    _check_keys(doc, {"certificate", "info"}, where)
    cert = _expect(doc.get("certificate"), str, f"{where}.certificate")
    return CertificateRef(cert, dict(doc.get("info") or {}))


# --------------------------------------------------------------------------- enrollments

_COMMON_FIELDS = {
    "attestation",
    "capabilities",
    "initialTwin",
    "etag",
    "provisioningStatus",
    "reprovisionPolicy",
    "createdDateTimeUtc",
    "lastUpdatedDateTimeUtc",
    "allocationPolicy",
    "iotHubs",
    "customAllocationDefinition",
    "iotHubHostName",
}


@dataclass(frozen=True, kw_only=True)
class Enrollment:
    """What individual enrollments and enrollment groups share."""

    attestation: Attestation
    provisioning_status: str = "enabled"
    iot_edge: bool = False
    initial_twin: Json | None = None
    reprovision_policy: ReprovisionPolicy = field(default_factory=ReprovisionPolicy)
    allocation_policy: str | None = None
    iot_hubs: tuple[str, ...] = ()
    custom_allocation: CustomAllocation | None = None
    etag: str | None = None
    created: str | None = None
    updated: str | None = None

    @property
    def is_group(self) -> bool:
        """True for an enrollment group."""
        return False

    @property
    def enabled(self) -> bool:
        """True when devices may provision through this entry."""
        return self.provisioning_status == "enabled"

    @property
    def id(self) -> str:
        """The registration ID or enrollment group ID."""
        raise NotImplementedError

    def _common_to_dict(self, show_keys: bool) -> Json:
        doc: Json = {
            "attestation": self.attestation.to_dict(group=self.is_group, show_keys=show_keys),
            "capabilities": {"iotEdge": self.iot_edge},
        }
        if self.initial_twin is not None:
            doc["initialTwin"] = copy.deepcopy(self.initial_twin)
        doc["etag"] = self.etag
        doc["provisioningStatus"] = self.provisioning_status
        doc["reprovisionPolicy"] = self.reprovision_policy.to_dict()
        doc["createdDateTimeUtc"] = self.created
        doc["lastUpdatedDateTimeUtc"] = self.updated
        if self.allocation_policy:
            doc["allocationPolicy"] = self.allocation_policy
        if self.iot_hubs:
            doc["iotHubs"] = list(self.iot_hubs)
        if self.custom_allocation:
            doc["customAllocationDefinition"] = self.custom_allocation.to_dict()
        return doc

    @staticmethod
    def _common_from_dict(doc: Json, *, group: bool, where: str) -> Json:
        caps = _expect(doc.get("capabilities") or {}, dict, f"{where}.capabilities")
        _check_keys(caps, {"iotEdge"}, f"{where}.capabilities")
        hubs = _expect(doc.get("iotHubs") or [], list, f"{where}.iotHubs")
        legacy_hub = doc.get("iotHubHostName")
        policy = doc.get("allocationPolicy")
        if legacy_hub and not hubs:
            # DPS's legacy single-hub field means a static assignment (as az maps --iot-hub-host-name).
            hubs, policy = [legacy_hub], policy or "static"
        twin = doc.get("initialTwin")
        custom = doc.get("customAllocationDefinition")
        return {
            "attestation": Attestation.from_dict(doc.get("attestation"), group=group, where=f"{where}.attestation"),
            "provisioning_status": _choice(
                doc.get("provisioningStatus") or "enabled", PROVISIONING_STATUSES, f"{where}.provisioningStatus"
            ),
            "iot_edge": _expect(caps.get("iotEdge", False), bool, f"{where}.capabilities.iotEdge"),
            "initial_twin": validate_initial_twin(twin, f"{where}.initialTwin") if twin is not None else None,
            "reprovision_policy": ReprovisionPolicy.from_dict(doc["reprovisionPolicy"], f"{where}.reprovisionPolicy")
            if doc.get("reprovisionPolicy") is not None
            else ReprovisionPolicy(),
            "allocation_policy": _choice(policy, ALLOCATION_POLICIES, f"{where}.allocationPolicy") if policy else None,
            "iot_hubs": tuple(hub_host_name(_expect(h, str, f"{where}.iotHubs[]")) for h in hubs),
            "custom_allocation": CustomAllocation.from_dict(custom, f"{where}.customAllocationDefinition")
            if custom
            else None,
            "etag": doc.get("etag"),
            "created": doc.get("createdDateTimeUtc"),
            "updated": doc.get("lastUpdatedDateTimeUtc"),
        }


@dataclass(frozen=True, kw_only=True)
class IndividualEnrollment(Enrollment):
    """One device's entry in the enrollment list."""

    registration_id: str
    device_id: str | None = None
    optional_device_information: Json | None = None

    @property
    def id(self) -> str:
        """The registration ID."""
        return self.registration_id

    def to_dict(self, *, show_keys: bool = True) -> Json:
        """The DPS `IndividualEnrollment` object."""
        doc: Json = {"registrationId": self.registration_id}
        if self.device_id:
            doc["deviceId"] = self.device_id
        if self.optional_device_information is not None:
            doc["optionalDeviceInformation"] = copy.deepcopy(self.optional_device_information)
        doc.update(self._common_to_dict(show_keys))
        return doc

    @classmethod
    def from_dict(cls, doc: Any, where: str = "enrollment") -> IndividualEnrollment:
        """Parse and validate a DPS `IndividualEnrollment` object."""
        _expect(doc, dict, where)
        _check_keys(
            doc,
            _COMMON_FIELDS | {"registrationId", "deviceId", "optionalDeviceInformation", "registrationState"},
            where,
        )
        reg_id = validate_registration_id(_expect(doc.get("registrationId"), str, f"{where}.registrationId"))
        where = f"enrollment {reg_id!r}"
        device_id = doc.get("deviceId")
        info = doc.get("optionalDeviceInformation")
        return cls(
            registration_id=reg_id,
            device_id=validate_device_id(device_id) if device_id else None,
            optional_device_information=_device_information(info, where) if info is not None else None,
            **cls._common_from_dict(doc, group=False, where=where),
        )


@dataclass(frozen=True, kw_only=True)
class EnrollmentGroup(Enrollment):
    """A group of devices sharing a symmetric key or a signing CA."""

    enrollment_group_id: str

    @property
    def is_group(self) -> bool:
        """True for an enrollment group."""
        return True

    @property
    def id(self) -> str:
        """The enrollment group ID."""
        return self.enrollment_group_id

    def to_dict(self, *, show_keys: bool = True) -> Json:
        """The DPS `EnrollmentGroup` object."""
        doc: Json = {"enrollmentGroupId": self.enrollment_group_id}
        doc.update(self._common_to_dict(show_keys))
        return doc

    @classmethod
    def from_dict(cls, doc: Any, where: str = "enrollment group") -> EnrollmentGroup:
        """Parse and validate a DPS `EnrollmentGroup` object."""
        _expect(doc, dict, where)
        _check_keys(doc, _COMMON_FIELDS | {"enrollmentGroupId"}, where)
        group_id = validate_group_id(_expect(doc.get("enrollmentGroupId"), str, f"{where}.enrollmentGroupId"))
        return cls(
            enrollment_group_id=group_id,
            **cls._common_from_dict(doc, group=True, where=f"enrollment group {group_id!r}"),
        )


# --------------------------------------------------------------------------- hubs and service


@dataclass(frozen=True)
class LinkedHub:
    """An IoT hub linked to the service (`IotHubDefinitionDescription`)."""

    name: str
    connection_string: str
    location: str | None = None
    allocation_weight: int | None = None
    apply_allocation_policy: bool | None = None

    @property
    def weight(self) -> int:
        """The effective allocation weight (DPS treats null as 1)."""
        return self.allocation_weight or 1

    @property
    def applies_policy(self) -> bool:
        """Whether the hub takes part in allocation when an enrollment names no hubs (null means yes)."""
        return self.apply_allocation_policy is not False

    def to_dict(self, *, show_keys: bool = True) -> Json:
        """The DPS `IotHubDefinitionDescription` object; the access key is masked unless `show_keys`."""
        cs = self.connection_string if show_keys else mask_connection_string(self.connection_string)
        return {
            "allocationWeight": self.allocation_weight,
            "applyAllocationPolicy": self.apply_allocation_policy,
            "connectionString": cs,
            "location": self.location,
            "name": self.name,
        }

    @classmethod
    def from_dict(cls, doc: Any, where: str = "linked hub") -> LinkedHub:
        """Parse and validate a linked hub."""
        _expect(doc, dict, where)
        _check_keys(doc, {"allocationWeight", "applyAllocationPolicy", "connectionString", "location", "name"}, where)
        name = hub_host_name(_expect(doc.get("name"), str, f"{where}.name"))
        where = f"linked hub {name!r}"
        weight = doc.get("allocationWeight")
        if weight is not None:
            validate_weight(_expect(weight, int, f"{where}.allocationWeight"))
        apply = doc.get("applyAllocationPolicy")
        if apply is not None:
            _expect(apply, bool, f"{where}.applyAllocationPolicy")
        location = doc.get("location")
        if location is not None:
            from dpsctl.core.regions import normalize_region

            location = normalize_region(_expect(location, str, f"{where}.location"))
        cs = doc.get("connectionString") or default_hub_connection_string(name)
        return cls(name, _expect(cs, str, f"{where}.connectionString"), location, weight, apply)


def validate_weight(weight: int) -> int:
    """Allocation weights are 1 to 1000, as in DPS."""
    if not 1 <= weight <= 1000:
        raise InvalidInput(f"allocation weight {weight} is out of range", hint="use a whole number from 1 to 1000")
    return weight


def check_hub_connection_string(cs: str, host: str) -> str:
    """A hub connection string must name the same hub and carry a valid Base64 key, as DPS checks when linking."""
    fields = {}
    for part in cs.split(";"):
        name, sep, value = part.partition("=")
        if sep:
            fields[name.strip().lower()] = value
    missing = [f for f in ("hostname", "sharedaccesskeyname", "sharedaccesskey") if not fields.get(f)]
    if missing:
        raise InvalidInput(
            "hub connection string is missing " + ", ".join(missing),
            hint="expected HostName=<hub>.azure-devices.net;SharedAccessKeyName=<policy>;SharedAccessKey=<key>",
        )
    if not fields["hostname"].isascii() or fields["hostname"].lower() != host:
        raise InvalidInput(f"the connection string is for {fields['hostname']}, not {host}")
    from dpsctl.core.keys import decode_key

    decode_key(fields["sharedaccesskey"], what="hub key (SharedAccessKey of the connection string)")
    return cs


def default_hub_connection_string(host: str) -> str:
    """A placeholder owner connection string for a simulated hub, with a stable fake key."""
    import base64
    import hashlib

    key = base64.b64encode(hashlib.sha256(f"dpsctl-simulated-hub:{host}".encode()).digest()).decode()
    return f"HostName={host};SharedAccessKeyName=iothubowner;SharedAccessKey={key}"


def connection_string_fields(text: str) -> dict[str, str]:
    """The `Name=value;...` fields of a connection string, names lower-cased (a value may hold '=')."""
    fields: dict[str, str] = {}
    for part in text.split(";"):
        name, sep, value = part.partition("=")
        if sep:
            fields[name.strip().lower()] = value.strip()
    return fields


def mask_connection_string(cs: str) -> str:
    """Hide the SharedAccessKey part of a connection string, as the Azure portal and az do."""
    parts = []
    for part in cs.split(";"):
        name, sep, _ = part.partition("=")
        parts.append(f"{name}=****" if sep and name.lower() == "sharedaccesskey" else part)
    return ";".join(parts)


@dataclass(frozen=True)
class ServiceSettings:
    """The provisioning service instance: ID scope, default allocation policy, location, operations count."""

    id_scope: str
    allocation_policy: str = "hashed"
    location: str | None = None
    name: str = "dpsctl"
    operations: int = 0
    created: str | None = None
    service_key: str | None = None
    history_sequence: int = 0

    @property
    def device_endpoint(self) -> str:
        """The global device endpoint host name devices use."""
        return "global.azure-devices-provisioning.net"

    @property
    def service_host(self) -> str:
        """The service operations host name of this instance."""
        return f"{self.name}.azure-devices-provisioning.net"

    def to_dict(self, *, show_keys: bool = True) -> Json:
        """Stored form of the settings (the ARM-like view is built by the service module)."""
        doc = {
            "name": self.name,
            "idScope": self.id_scope,
            "allocationPolicy": self.allocation_policy,
            "location": self.location,
            "operations": self.operations,
            "createdDateTimeUtc": self.created,
            "historySequence": self.history_sequence,
        }
        if show_keys:
            doc["serviceKey"] = self.service_key
        return doc

    @classmethod
    def from_dict(cls, doc: Any, where: str = "service") -> ServiceSettings:
        """Parse stored or imported service settings."""
        _expect(doc, dict, where)
        _check_keys(
            doc,
            {
                "name",
                "idScope",
                "allocationPolicy",
                "location",
                "operations",
                "createdDateTimeUtc",
                "serviceKey",
                "historySequence",
            },
            where,
        )
        location = doc.get("location")
        if location is not None:
            from dpsctl.core.regions import normalize_region

            location = normalize_region(_expect(location, str, f"{where}.location"))
        return cls(
            id_scope=validate_id_scope(_expect(doc.get("idScope"), str, f"{where}.idScope")),
            allocation_policy=_choice(
                doc.get("allocationPolicy") or "hashed", SERVICE_POLICIES, f"{where}.allocationPolicy"
            ),
            location=location,
            name=_expect(doc.get("name") or "dpsctl", str, f"{where}.name"),
            operations=_expect(doc.get("operations") or 0, int, f"{where}.operations"),
            created=doc.get("createdDateTimeUtc"),
            service_key=doc.get("serviceKey"),
            history_sequence=_expect(doc.get("historySequence") or 0, int, f"{where}.historySequence"),
        )

    def with_operations(self, added: int) -> ServiceSettings:
        """A copy with `added` more billable operations counted."""
        return replace(self, operations=self.operations + added)
