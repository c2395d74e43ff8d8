"""Records of the enrollment list (individual enrollments and groups), converted to and from the DPS REST (camelCase) shape.

Two ways in: `from_dict` checks input from users, devices and files (through core/validation.py); `from_stored`
builds a record from what dpsctl itself wrote to the store, without checking it again.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from dpsctl.core.errors import InvalidInput
from dpsctl.core.ids import hub_host_name, validate_device_id, validate_group_id, validate_registration_id
from dpsctl.core.untrusted_json import check_depth, check_value
from dpsctl.core.validation import (
    DEFAULT_CUSTOM_API_VERSION,
    Json,
    choice,
    expect,
    input_object,
    optional_field,
    validate_allocation_command,
    validate_initial_twin,
    validate_webhook_url,
)

ATTESTATION_TYPES: tuple[str, ...] = ("symmetricKey", "x509", "tpm")
ALLOCATION_POLICIES: tuple[str, ...] = ("hashed", "geoLatency", "static", "custom")
PROVISIONING_STATUSES: tuple[str, ...] = ("enabled", "disabled")


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
        """Parse and check the DPS `reprovisionPolicy` object from input (null: the default policy)."""
        if doc is not None:
            for key in input_object(doc, {"updateHubAssignment", "migrateDeviceData"}, where):
                optional_field(doc, key, bool, where)
        return cls.from_stored(doc)

    @classmethod
    def from_stored(cls, doc: Json | None) -> ReprovisionPolicy:
        """Build from a stored `reprovisionPolicy` object (absent: the default policy)."""
        if not doc:
            return _DEFAULT_REPROVISION
        return cls(doc.get("updateHubAssignment") is not False, doc.get("migrateDeviceData") is not False)


_DEFAULT_REPROVISION = ReprovisionPolicy()  # frozen: one instance serves every record that has no policy


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
    def from_dict(cls, doc: Any, where: str = "customAllocationDefinition") -> CustomAllocation | None:
        """Parse and check the DPS `customAllocationDefinition` object from input (null or empty: none)."""
        if not doc:
            return None
        input_object(doc, {"webhookUrl", "apiVersion", "allocationCommand"}, where)
        url, command = doc.get("webhookUrl"), doc.get("allocationCommand")
        if url is not None:
            validate_webhook_url(expect(url, str, f"{where}.webhookUrl"), f"{where}.webhookUrl")
        if command is not None:
            validate_allocation_command(
                expect(command, str, f"{where}.allocationCommand"), f"{where}.allocationCommand"
            )
        expect(doc.get("apiVersion") or DEFAULT_CUSTOM_API_VERSION, str, f"{where}.apiVersion")
        return cls.from_stored(doc)

    @classmethod
    def from_stored(cls, doc: Json) -> CustomAllocation:
        """Build from a stored `customAllocationDefinition` object."""
        api = doc.get("apiVersion") or DEFAULT_CUSTOM_API_VERSION
        return cls(doc.get("webhookUrl") or None, api, doc.get("allocationCommand") or None)


# --------------------------------------------------------------------------- attestation


@dataclass(frozen=True)
class CertificateRef:
    """An uploaded certificate (PEM) with the information DPS derives from it."""

    certificate: str
    info: Json

    def to_dict(self) -> Json:
        """The DPS `X509CertificateWithInfo` object."""
        return {"certificate": self.certificate, "info": dict(self.info)}

    @classmethod
    def from_stored(cls, doc: Json | None) -> CertificateRef | None:
        """Build from an `X509CertificateWithInfo` object (None: no certificate in that slot)."""
        return None if doc is None else cls(doc["certificate"], dict(doc.get("info") or {}))


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

    @property
    def certificates(self) -> tuple[tuple[str, CertificateRef], ...]:
        """The uploaded certificates, with their slot ("primary", "secondary")."""
        slots = (("primary", self.primary_cert), ("secondary", self.secondary_cert))
        return tuple((slot, ref) for slot, ref in slots if ref is not None)

    @property
    def ca_references(self) -> tuple[tuple[str, str], ...]:
        """The names of uploaded CA certificates this attestation refers to, with their slot."""
        slots = (("primary", self.primary_ca), ("secondary", self.secondary_ca))
        return tuple((slot, name) for slot, name in slots if name)

    def to_dict(self, *, group: bool, show_keys: bool = True) -> Json:
        """The DPS `AttestationMechanism` object; symmetric keys only when `show_keys`."""
        doc: Json = {"type": self.type}
        if self.type == "symmetricKey":
            keys = {"primaryKey": self.primary_key, "secondaryKey": self.secondary_key} if show_keys else {}
            doc["symmetricKey"] = keys
        elif self.type == "x509":
            x509: Json = {}
            if self.certificates:
                certs = {slot: ref.to_dict() for slot, ref in self.certificates}
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
        """Parse and check an `AttestationMechanism` from input (certificates are re-parsed by the caller)."""
        input_object(doc, {"type", "symmetricKey", "x509", "tpm"}, where)
        kind = choice(doc.get("type"), ("symmetricKey", "x509") if group else ATTESTATION_TYPES, f"{where}.type")
        if kind == "symmetricKey":
            input_object(doc.get("symmetricKey") or {}, {"primaryKey", "secondaryKey"}, f"{where}.symmetricKey")
        elif kind == "tpm":
            tpm = input_object(doc.get("tpm"), {"endorsementKey", "storageRootKey"}, f"{where}.tpm")
            expect(tpm.get("endorsementKey"), str, f"{where}.tpm.endorsementKey")
            if tpm.get("storageRootKey"):
                expect(tpm["storageRootKey"], str, f"{where}.tpm.storageRootKey")
        else:
            certs_field = "signingCertificates" if group else "clientCertificates"
            x509 = input_object(
                doc.get("x509"), {certs_field, "caReferences"} if group else {certs_field}, f"{where}.x509"
            )
            certs = expect(x509.get(certs_field) or {}, dict, f"{where}.x509.{certs_field}")
            expect(x509.get("caReferences") or {}, dict, f"{where}.x509.caReferences")
            for slot in ("primary", "secondary"):
                if certs.get(slot) is not None:
                    ref = input_object(certs[slot], {"certificate", "info"}, f"{where}.x509.{certs_field}.{slot}")
                    expect(ref.get("certificate"), str, f"{where}.x509.{certs_field}.{slot}.certificate")
        return cls.from_stored({**doc, "type": kind}, group=group)

    @classmethod
    def from_stored(cls, doc: Json, *, group: bool) -> Attestation:
        """Build from a stored `AttestationMechanism` (or one `from_dict` has checked)."""
        kind = doc["type"]
        if kind == "symmetricKey":
            keys = doc.get("symmetricKey") or {}
            return cls(kind, primary_key=keys.get("primaryKey"), secondary_key=keys.get("secondaryKey"))
        if kind == "tpm":
            tpm = doc["tpm"]
            return cls(kind, endorsement_key=tpm["endorsementKey"], storage_root_key=tpm.get("storageRootKey") or None)
        x509 = doc.get("x509") or {}
        certs = x509.get("signingCertificates" if group else "clientCertificates") or {}
        refs = x509.get("caReferences") or {}
        return cls(
            kind,
            primary_cert=CertificateRef.from_stored(certs.get("primary")),
            secondary_cert=CertificateRef.from_stored(certs.get("secondary")),
            primary_ca=refs.get("primary"),
            secondary_ca=refs.get("secondary"),
        )


# --------------------------------------------------------------------------- enrollments

_COMMON_FIELDS = set(
    "attestation capabilities initialTwin etag provisioningStatus reprovisionPolicy createdDateTimeUtc"
    " lastUpdatedDateTimeUtc allocationPolicy iotHubs customAllocationDefinition iotHubHostName".split()
)


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
        """The shared fields of an input entry, checked, as constructor arguments."""
        caps = input_object(doc.get("capabilities") or {}, {"iotEdge"}, f"{where}.capabilities")
        hubs = expect(doc.get("iotHubs") or [], list, f"{where}.iotHubs")
        legacy_hub, policy = doc.get("iotHubHostName"), doc.get("allocationPolicy")
        if legacy_hub and not hubs:
            # DPS's legacy single-hub field means a static assignment (as az maps --iot-hub-host-name).
            hubs, policy = [legacy_hub], policy or "static"
        twin, custom = doc.get("initialTwin"), doc.get("customAllocationDefinition")
        status = doc.get("provisioningStatus") or "enabled"
        return {
            "attestation": Attestation.from_dict(doc.get("attestation"), group=group, where=f"{where}.attestation"),
            "provisioning_status": choice(status, PROVISIONING_STATUSES, f"{where}.provisioningStatus"),
            "iot_edge": optional_field(caps, "iotEdge", bool, f"{where}.capabilities", False),
            "initial_twin": None if twin is None else validate_initial_twin(twin, f"{where}.initialTwin"),
            "reprovision_policy": ReprovisionPolicy.from_dict(
                doc.get("reprovisionPolicy"), f"{where}.reprovisionPolicy"
            ),
            "allocation_policy": choice(policy, ALLOCATION_POLICIES, f"{where}.allocationPolicy") if policy else None,
            "iot_hubs": tuple(hub_host_name(expect(h, str, f"{where}.iotHubs[]")) for h in hubs),
            "custom_allocation": CustomAllocation.from_dict(custom, f"{where}.customAllocationDefinition"),
            "etag": doc.get("etag"),
            "created": doc.get("createdDateTimeUtc"),
            "updated": doc.get("lastUpdatedDateTimeUtc"),
        }

    @staticmethod
    def _common_from_stored(doc: Json, *, group: bool, where: str) -> Json:
        """The shared fields of a stored entry, as constructor arguments (free-form JSON only depth-checked)."""
        custom = doc.get("customAllocationDefinition")
        return {
            "attestation": Attestation.from_stored(doc["attestation"], group=group),
            "provisioning_status": doc.get("provisioningStatus") or "enabled",
            "iot_edge": (doc.get("capabilities") or {}).get("iotEdge", False),
            "initial_twin": _stored_json(doc.get("initialTwin"), f"{where}.initialTwin"),
            "reprovision_policy": ReprovisionPolicy.from_stored(doc.get("reprovisionPolicy")),
            "allocation_policy": doc.get("allocationPolicy") or None,
            "iot_hubs": tuple(doc.get("iotHubs") or ()),
            "custom_allocation": CustomAllocation.from_stored(custom) if custom else None,
            "etag": doc.get("etag"),
            "created": doc.get("createdDateTimeUtc"),
            "updated": doc.get("lastUpdatedDateTimeUtc"),
        }


def _stored_json(value: Json | None, where: str) -> Json | None:
    """A free-form stored value, refused in one line if an older dpsctl let in one too deep to print or copy."""
    return None if value is None else check_depth(value, where)


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
        """Parse and check a DPS `IndividualEnrollment` object from input."""
        allowed = _COMMON_FIELDS | {"registrationId", "deviceId", "optionalDeviceInformation", "registrationState"}
        input_object(doc, allowed, where)
        reg_id = validate_registration_id(expect(doc.get("registrationId"), str, f"{where}.registrationId"))
        where = f"enrollment {reg_id!r}"
        device_id, info = doc.get("deviceId"), doc.get("optionalDeviceInformation")
        if info is not None:
            info = check_value(
                expect(info, dict, f"{where}.optionalDeviceInformation"), f"{where}.optionalDeviceInformation"
            )
        return cls(
            registration_id=reg_id,
            device_id=validate_device_id(device_id) if device_id else None,
            optional_device_information=info,
            **cls._common_from_dict(doc, group=False, where=where),
        )

    @classmethod
    def from_stored(cls, doc: Json) -> IndividualEnrollment:
        """Build from a stored `IndividualEnrollment` object, without checking it again."""
        where = f"enrollment {doc['registrationId']!r}"
        return cls(
            registration_id=doc["registrationId"],
            device_id=doc.get("deviceId") or None,
            optional_device_information=_stored_json(
                doc.get("optionalDeviceInformation"), f"{where}.optionalDeviceInformation"
            ),
            **cls._common_from_stored(doc, group=False, where=where),
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
        """Parse and check a DPS `EnrollmentGroup` object from input."""
        input_object(doc, _COMMON_FIELDS | {"enrollmentGroupId"}, where)
        group_id = validate_group_id(expect(doc.get("enrollmentGroupId"), str, f"{where}.enrollmentGroupId"))
        where = f"enrollment group {group_id!r}"
        return cls(enrollment_group_id=group_id, **cls._common_from_dict(doc, group=True, where=where))

    @classmethod
    def from_stored(cls, doc: Json) -> EnrollmentGroup:
        """Build from a stored `EnrollmentGroup` object, without checking it again."""
        group_id = doc["enrollmentGroupId"]
        where = f"enrollment group {group_id!r}"
        return cls(enrollment_group_id=group_id, **cls._common_from_stored(doc, group=True, where=where))
