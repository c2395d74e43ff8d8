"""Every checkable rule of /work/shared/reference/dps-reference.md (mirrored in docs/conformance.md), one entry each.

An ID is `§<section>/<slug>`: the reference section the rule comes from and a short name. IDs are stable: tests
name them in `@pytest.mark.rule(ID)`. To add a rule, append a `Rule` here (keep the section order), mark the tests
that show it, and regenerate docs/conformance.md (`python -m tests.conformance.generate > docs/conformance.md`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

ID_FORMAT = re.compile(r"§\d+(\.\d+)?/[a-z0-9]+(-[a-z0-9]+)*")


@dataclass(frozen=True)
class Rule:
    """One documented behaviour of the real service."""

    id: str
    statement: str
    source: str  # source key of the reference (§0), or DOC:page

    @property
    def section(self) -> str:
        """The reference section, e.g. '§5' or '§2.5'."""
        return self.id.split("/", 1)[0]


RULES: tuple[Rule, ...] = (
    # §1 hosts, protocols, api-versions
    Rule("§1/tpm-not-over-mqtt", "TPM attestation is not supported over MQTT.", "DOC:iot-dps-mqtt-support"),
    Rule("§1/custom-allocation-api-version-minimum", "`customAllocationDefinition.apiVersion` is an api-version no older than 2018-09-01-preview.", "SPEC-SVC"),
    # §2 device runtime API
    Rule("§2.1/register-202-then-poll-200", "Register answers 202 `assigning` with an operation ID, `Location` and `Retry-After`; polling answers 202 until the outcome, then 200.", "SPEC-DEV, DOC:iot-dps-https-sym-key-support"),
    Rule("§2.3/registration-state-fields", "An assigned `registrationState` carries registrationId, createdDateTimeUtc, assignedHub, deviceId, status, substatus, lastUpdatedDateTimeUtc and etag.", "SPEC-DEV"),
    Rule("§2.5/bad-credential-401", "A bad credential is refused with 401 and error code 401002; no registration record is written.", "CLI integration tests [O]"),
    Rule("§2.5/disabled-entry-status-disabled", "A device of a disabled entry gets status `disabled`, and its registration record says `disabled`.", "CLI integration tests [O]"),
    Rule("§2.5/no-hub-status-failed", "With no hub to assign, the registration ends `failed` with a failed registration record.", "CLI integration tests [O]"),
    Rule("§2.5/group-key-itself-refused", "A device of a symmetric-key group that signs with the group key instead of its derived key is refused (401).", "CLI integration tests [O]"),
    Rule("§2.5/x509-without-enrollment-401", "An X.509 device whose certificate matches no enrollment gets HTTP 401 with a DPS error body.", "CLI integration tests [O]"),
    Rule("§2.6/error-body-shape", "Errors carry `{errorCode, trackingId, message, timestampUtc}`, the code being HTTP status × 1000 + sub-code.", "SPEC-DEV, EMB"),
    # §3 MQTT
    Rule("§3/mqtt-register-and-poll", "Over MQTT a device publishes to `$dps/registrations/PUT/iotdps-register/?$rid=` and polls `iotdps-get-operationstatus`; answers come on `$dps/registrations/res/{status}/?$rid=...&retry-after=`.", "DOC:iot-dps-mqtt-support, PY, EMB"),
    Rule("§3/mqtt-bad-credential-on-the-response-topic", "Over MQTT a bad credential is answered on the response topic with 401 and the DPS error body.", "CLI integration tests [O], EMB"),
    # §4 symmetric keys
    Rule("§4.1/sas-signature-over-literal-sr", "Every SDK's SAS token verifies: raw or URL-encoded `sr`, with or without `skn`, fields in any order.", "DOC:concepts-symmetric-key-attestation, PY, NODE, CSDK"),
    Rule("§4.1/sas-expiry", "A token whose `se` has passed is refused.", "DOC:concepts-symmetric-key-attestation"),
    Rule("§4.2/derived-device-keys", "A group device's key is Base64(HMAC-SHA256(group key, registration ID)); the published vectors reproduce, from the primary or the secondary key.", "DOC:concepts-symmetric-key-attestation, DOC:how-to-use-custom-allocation-policies"),
    Rule("§4.3/generated-keys", "Keys not given are generated: 64 random bytes, Base64.", "DOC:concepts-symmetric-key-attestation"),
    # §5 X.509
    Rule("§5/cn-is-registration-id", "The device certificate's subject CN is the registration ID (at most 64 characters).", "DOC:concepts-x509-attestation"),
    Rule("§5/first-entry-along-the-chain-wins", "Matching walks leaf to root: the individual enrollment, then the group of the nearest certificate; the first entry found decides, enabled or not.", "DOC:concepts-x509-attestation"),
    Rule("§5/one-entry-per-certificate", "A certificate can be specified in only one enrollment entry of a DPS instance.", "DOC:concepts-x509-attestation"),
    Rule("§5/individual-chain-reaches-verified-certificate", "A device of an individual enrollment that uses a certificate chain must chain up to a certificate uploaded and verified in the service.", "DOC:iot-dps-https-x509-support"),
    Rule("§5/group-chain-reaches-verified-certificate", "A device of an enrollment group must present its chain up to a verified certificate; an unverified CA authenticates nothing.", "DOC:concepts-x509-attestation, DOC:how-to-verify-certificates"),
    Rule("§5/proof-of-possession", "A CA is verified by a certificate whose CN is a fresh verification code, signed with the CA's key (or verified on upload).", "DOC:how-to-verify-certificates, SPEC-ARM"),
    Rule("§5/hub-identity-is-the-leaf-thumbprint", "The hub device of an X.509 device is `selfSigned` with the thumbprint of the certificate it presented.", "CLI integration tests [O]"),
    # §6 TPM
    Rule("§6/tpm-challenge-401", "A TPM device registering without a token gets 401 with `authenticationKey` (and `keyName`) to answer.", "DOC:concepts-tpm-attestation, NODE, CSDK"),
    Rule("§6/tpm-default-registration-id", "A TPM's default registration ID is the lower-case unpadded Base32 of SHA-256 of its endorsement key.", "NODE"),
    Rule("§6/tpm-wire-structures", "The challenge is a TPM 2.0 MakeCredential blob against the EK plus a duplicated HMAC key.", "NODE, CSDK"),
    # §7 service API
    Rule("§7.5/groups-are-not-tpm", "Enrollment groups use symmetric keys or X.509, never TPM.", "DOC:concepts-service"),
    Rule("§7.8/registration-records-outlive-their-group", "Registration records of a deleted group remain.", "DOC:how-to-unprovision-devices"),
    Rule("§7.9/stale-etag-refused", "A write with a stale etag (`If-Match`) is refused (412).", "DOC:how-to-troubleshoot-dps"),
    # §8 allocation
    Rule("§8/candidates-are-named-or-all-linked-hubs", "Candidate hubs are the entry's hubs, else every linked hub that applies allocation policy.", "DOC:how-to-use-allocation-policies"),
    Rule("§8/static-names-one-hub", "Static allocation needs exactly one hub.", "DOC:how-to-use-allocation-policies, CLI"),
    Rule("§8/hashed-spreads-by-weight", "Hashed allocation spreads devices evenly by allocation weight.", "DOC:how-to-use-allocation-policies"),
    Rule("§8/geolatency-nearest-hub", "geoLatency assigns the hub with the lowest latency to the device.", "DOC:how-to-use-allocation-policies"),
    Rule("§8/custom-is-not-a-service-default", "Custom allocation is set per entry; it cannot be the service's default policy.", "SPEC-ARM"),
    Rule("§8.9/device-id", "The hub device ID is the individual enrollment's device ID, else the registration ID; group devices always use the registration ID.", "DOC:concepts-x509-attestation"),
    # §9 custom allocation
    Rule("§9/webhook-request-shape", "The webhook gets `individualEnrollment` or `enrollmentGroup` (keys stripped), `deviceRuntimeContext` and `linkedHubs`.", "DOC:concepts-custom-allocation"),
    Rule("§9/webhook-url-masked-in-request", "The enrollment in the request shows its webhook URL with the function key masked (`?****`).", "DOC:concepts-custom-allocation"),
    Rule("§9/webhook-hub-must-be-linked", "A webhook answer naming a hub that is not among `linkedHubs` fails the registration.", "DOC:concepts-custom-allocation"),
    Rule("§9/initial-twin-on-reprovisioning", "On reprovisioning the webhook's `initialTwin` is used only when the hub changes and the policy resets the data; otherwise DPS ignores it.", "DOC:concepts-custom-allocation"),
    Rule("§9/never-offers-only-the-current-hub", "Under 'never reprovision' the webhook is offered only the device's current hub.", "DOC:concepts-custom-allocation"),
    # §10 reprovisioning
    Rule("§10/migrate-moves-device-and-twin", "'Reprovision and migrate data' moves the device with its twin to the new hub (`deviceDataMigrated`).", "SPEC-SVC, DOC:how-to-reprovision"),
    Rule("§10/reset-applies-initial-config", "'Reprovision and reset' gives the device the entry's initial configuration (`deviceDataReset`).", "SPEC-SVC, DOC:how-to-reprovision"),
    Rule("§10/never-keeps-the-hub", "'Never reprovision' keeps the device on its current hub.", "SPEC-SVC, DOC:how-to-reprovision"),
    Rule("§10/repeat-on-same-hub-keeps-initial-assignment", "Repeated registrations to the same hub keep substatus `initialAssignment`.", "CLI integration tests [O]"),
    # §11 precedence
    Rule("§11/individual-enrollment-before-groups", "An individual enrollment for the registration ID takes precedence over any group.", "DOC:dps-faq"),
    Rule("§11/disabled-individual-enrollment-blocks-group-device", "A disabled individual enrollment blocks the device even when an enabled group covers it, whatever its attestation type.", "DOC:how-to-revoke-device-access-portal"),
    # §12 validation and limits
    Rule("§12/registration-id-format", "Registration IDs: 1 to 128 characters of letters, digits and `- . _ :`.", "SPEC-DEV, DOC:concepts-x509-attestation"),
    Rule("§12/registration-id-case-insensitive", "Registration IDs are case-insensitive: one registration whatever the case the device uses.", "DOC:concepts-x509-attestation, SPEC-SVC"),
    Rule("§12/quotas", "Quotas: 1,000,000 individual enrollments, 100 groups per attestation type, 25 CA certificates, 50 linked hubs.", "DOC-LIMITS"),
    Rule("§12/message-size-96kb", "Device messages are at most 96 KB.", "DOC-LIMITS"),
    # §13 linked hubs
    Rule("§13/linked-hub-has-a-location", "Every linked hub has a location (an ARM region).", "SPEC-ARM"),
    Rule("§13/allocation-weight-range", "Allocation weights are 1 to 1000; null counts as 1.", "DOC:how-to-manage-linked-iot-hubs"),
)

BY_ID: dict[str, Rule] = {rule.id: rule for rule in RULES}
