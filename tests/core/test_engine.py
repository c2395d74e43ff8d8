"""The provisioning engine on its own: requests driven straight into it against the memory store, typed outcomes.

No CLI, no HTTP: each test builds a store (service, hubs, entries), sends one RegistrationRequest through
`provision_phased`, and asserts the ProvisionResult and the typed Registration record it wrote.
"""

from __future__ import annotations

import base64
from datetime import datetime, timedelta, timezone

import pytest

from dpsctl.core import custom_allocation, sas
from dpsctl.core.attestation import SasCredential
from dpsctl.core.custom_allocation import AllocationResponse
from dpsctl.core.enrollments import CredentialInput, EnrollmentOptions, add_entry, new_enrollment, new_group
from dpsctl.core.errors import AllocationFailed, Disabled, Unauthorized
from dpsctl.core.hubs import add_hub
from dpsctl.core.keys import derive_device_key
from dpsctl.core.provisioning import ProvisionResult, RegistrationRequest, StoreTransactions, history, provision_phased
from dpsctl.core.registrations import EntryRef, Registration, find_registration
from dpsctl.core.sas import build_sas_token, device_resource_uri
from dpsctl.core.service import init_service
from dpsctl.store import Transaction
from dpsctl.store.memory import MemoryStore

HUB_A, HUB_B = "hub-a.azure-devices.net", "hub-b.azure-devices.net"
SCOPE = "0ne00000E0E"
KEY, GROUP_KEY, WRONG = (base64.b64encode(seed * 32).decode() for seed in (b"e", b"g", b"w"))
START = datetime(2026, 12, 1, 3, 0, tzinfo=timezone.utc)


def clock() -> datetime:
    return START


@pytest.fixture
def store() -> MemoryStore:
    s = MemoryStore()
    with s.transaction(write=True) as tx:
        init_service(tx, START, id_scope=SCOPE, allocation_policy="hashed")
        add_hub(tx, "hub-a", location="westeurope")
        add_hub(tx, "hub-b", location="eastus")
    return s


def enroll(store: MemoryStore, registration_id: str, **options: object) -> None:
    """An individual symmetric-key enrollment with KEY."""
    entry = new_enrollment(registration_id, "symmetricKey", CredentialInput(KEY, KEY), EnrollmentOptions(**options))  # type: ignore[arg-type]  # test options by name
    with store.transaction(write=True) as tx:
        add_entry(tx, entry, START)


def enroll_group(store: MemoryStore, group_id: str, **options: object) -> None:
    """A symmetric-key enrollment group with GROUP_KEY."""
    group = new_group(group_id, "symmetricKey", CredentialInput(GROUP_KEY, GROUP_KEY), EnrollmentOptions(**options))  # type: ignore[arg-type]  # test options by name
    with store.transaction(write=True) as tx:
        add_entry(tx, group, START)


def register(
    store: MemoryStore, registration_id: str, key: str = KEY, *, name_id: bool = True, region: str | None = None
) -> ProvisionResult:
    """One device through the engine, with a SAS token signed by `key` (the ID given, or only in the token)."""
    expiry = int((START + timedelta(hours=1)).timestamp())
    token = build_sas_token(device_resource_uri(SCOPE, registration_id), key, expiry)
    request = RegistrationRequest(SasCredential(token), registration_id if name_id else None, region=region)
    return provision_phased(StoreTransactions(store), request, clock)


def move_to_hub_b(store: MemoryStore, registration_id: str, reprovision_policy: str) -> None:
    """The enrollment now names hub B only (static), with the given reprovision policy."""
    options = EnrollmentOptions(hubs=(HUB_B,), allocation_policy="static", reprovision_policy=reprovision_policy)
    entry = new_enrollment(registration_id, "symmetricKey", CredentialInput(KEY, KEY), options)
    with store.transaction(write=True) as tx:
        tx.put("enrollments", entry.to_dict())


def stored(store: MemoryStore, registration_id: str) -> Registration:
    with store.transaction() as tx:
        found = find_registration(tx, registration_id)
    assert found is not None
    return found


def test_a_symmetric_individual_enrollment_is_assigned_and_recorded(store):
    enroll(store, "sym-1")
    result = register(store, "sym-1")
    assert result.assigned and result.error is None and result.record is not None
    record = result.record
    assert (record.status, record.substatus, record.device_id) == ("assigned", "initialAssignment", "sym-1")
    assert record.assigned_hub in (HUB_A, HUB_B) and record.current_hub == record.initial_hub == record.assigned_hub
    assert record.entry == EntryRef(group=False, id="sym-1")
    assert result.connection_string == f"HostName={record.assigned_hub};DeviceId=sym-1;SharedAccessKey={KEY}"
    assert stored(store, "sym-1") == record
    # What the device is told is the DPS view: no bookkeeping.
    state = result.operation["registrationState"]
    assert state == record.view() and not [k for k in state if k.startswith("_")]
    assert state["symmetricKey"] == {}


def test_the_registration_id_is_read_from_the_token_when_not_given(store):
    enroll(store, "sym-2")
    result = register(store, "sym-2", name_id=False)
    assert result.assigned and result.registration_id == "sym-2"


def test_a_group_device_is_assigned_with_its_derived_key(store):
    enroll_group(store, "fleet")
    device_key = derive_device_key(GROUP_KEY, "fleet-7")
    result = register(store, "fleet-7", device_key)
    assert result.assigned and result.record is not None
    assert result.record.entry == EntryRef(group=True, id="fleet")
    assert result.record.attestation == {"symmetricKey": {"enrollmentGroupId": "fleet"}}
    assert result.connection_string is not None and result.connection_string.endswith(f"SharedAccessKey={device_key}")


def test_a_group_device_signing_with_the_group_key_itself_is_refused_unrecorded(store):
    enroll_group(store, "fleet")
    result = register(store, "fleet-8", GROUP_KEY)
    assert result.status == "unauthorized" and isinstance(result.error, Unauthorized)
    assert "derive the device key" in (result.error.hint or "")
    with store.transaction() as tx:
        assert find_registration(tx, "fleet-8") is None  # a 401 leaves no record


def test_a_refused_token_is_unauthorized_and_writes_no_record(store):
    enroll(store, "sym-3")
    result = register(store, "sym-3", WRONG)
    assert result.status == "unauthorized" and isinstance(result.error, Unauthorized)
    assert result.operation["errorCode"] == 401002 and result.connection_string is None
    assert result.record == Registration("sym-3", "unauthorized")
    with store.transaction() as tx:
        assert find_registration(tx, "sym-3") is None


def test_a_malformed_token_is_unauthorized_not_an_input_error(store):
    enroll(store, "sym-4")
    request = RegistrationRequest(SasCredential("SharedAccessSignature sr=x"), "sym-4")
    result = provision_phased(StoreTransactions(store), request, clock)
    assert result.status == "unauthorized"
    assert any("SAS token is malformed" in step.message for step in result.explain)


def test_a_disabled_enrollment_refuses_and_records_disabled(store):
    enroll(store, "sym-5", provisioning_status="disabled")
    result = register(store, "sym-5")
    assert result.status == "disabled" and isinstance(result.error, Disabled)
    record = stored(store, "sym-5")
    assert (record.status, record.error_code, record.assigned_hub) == ("disabled", 401003, None)
    assert record.entry == EntryRef(group=False, id="sym-5")


def test_a_disabled_group_refuses_its_devices(store):
    enroll_group(store, "off", provisioning_status="disabled")
    result = register(store, "off-1", derive_device_key(GROUP_KEY, "off-1"))
    assert result.status == "disabled" and stored(store, "off-1").entry == EntryRef(group=True, id="off")


def test_reprovisioning_to_another_hub_migrates_and_keeps_the_initial_hub(store):
    enroll(store, "mover", hubs=(HUB_A,), allocation_policy="static")
    first = register(store, "mover")
    assert first.record is not None and first.record.assigned_hub == HUB_A
    move_to_hub_b(store, "mover", "migrate")
    moved = register(store, "mover")
    assert moved.record is not None
    assert (moved.record.assigned_hub, moved.record.substatus) == (HUB_B, "deviceDataMigrated")
    assert moved.record.initial_hub == HUB_A and moved.record.current_hub == HUB_B
    assert moved.record.created == first.record.created
    with store.transaction() as tx:
        assert [d["hub"] for d in tx.scan("devices")] == [HUB_B]  # moved, not copied


def test_reprovisioning_with_policy_never_stays_on_the_hub(store):
    enroll(store, "stayer", hubs=(HUB_A,), allocation_policy="static", reprovision_policy="never")
    register(store, "stayer")
    move_to_hub_b(store, "stayer", "never")
    again = register(store, "stayer")
    assert again.record is not None and (again.record.assigned_hub, again.record.substatus) == (
        HUB_A,
        "initialAssignment",
    )


def test_a_refusal_after_an_assignment_keeps_where_the_device_lives(store):
    enroll(store, "flaky", hubs=(HUB_A,), allocation_policy="static")
    register(store, "flaky")
    with store.transaction(write=True) as tx:
        tx.delete("hubs", HUB_A)  # nothing left to allocate to
    refused = register(store, "flaky")
    assert refused.status == "failed" and isinstance(refused.error, AllocationFailed)
    record = stored(store, "flaky")
    assert (record.status, record.substatus, record.error_code) == ("failed", None, 400208)
    assert (record.current_hub, record.last_substatus, record.previous_substatus) == (
        HUB_A,
        "initialAssignment",
        "initialAssignment",
    )


@pytest.mark.parametrize(
    ("policy", "options", "region", "expected"),
    [
        ("static", {"hubs": (HUB_B,)}, None, HUB_B),
        ("geoLatency", {}, "eastus", HUB_B),
        ("geoLatency", {}, "westeurope", HUB_A),
    ],
)
def test_allocation_policies_choose_the_hub(store, policy, options, region, expected):
    enroll(store, f"alloc-{policy.lower()}", allocation_policy=policy, **options)
    result = register(store, f"alloc-{policy.lower()}", region=region)
    assert result.assigned and result.record is not None and result.record.assigned_hub == expected


def test_hashed_allocation_is_stable_for_a_device(store):
    enroll(store, "hashy", allocation_policy="hashed")
    first = register(store, "hashy")
    again = register(store, "hashy")
    assert first.record is not None and again.record is not None
    assert first.record.assigned_hub == again.record.assigned_hub
    assert again.record.substatus == "initialAssignment"  # same hub, migrate (the default): substatus kept


def test_custom_allocation_uses_the_webhooks_hub_and_payload(store, monkeypatch):
    asked = []

    def webhook(url: str, body: dict, *, timeout: float) -> AllocationResponse:
        asked.append(body)
        return AllocationResponse(HUB_B, None, {"from": "webhook"})

    monkeypatch.setattr(custom_allocation, "call_webhook", webhook)
    enroll(store, "custom-1", allocation_policy="custom", webhook_url="http://127.0.0.1:9/allocate", api_version="2021-10-01")
    result = register(store, "custom-1")
    assert result.assigned and result.record is not None
    assert (result.record.assigned_hub, result.record.payload) == (HUB_B, {"from": "webhook"})
    assert sorted(asked[0]["linkedHubs"]) == [HUB_A, HUB_B]


def test_a_stored_record_of_an_older_version_reads_and_writes_back_unchanged():
    doc = {
        "registrationId": "old",
        "createdDateTimeUtc": "2025-01-01T00:00:00Z",
        "status": "failed",
        "errorCode": 400208,
        "errorMessage": "no hub",
        "lastUpdatedDateTimeUtc": "2025-01-02T00:00:00Z",
        "etag": '"1"',
        "x509": {"certificateInfo": {}},
        "_currentHub": HUB_A,
        "_currentDeviceId": "old",
        "_initialHub": HUB_A,
        "_substatus": "deviceDataReset",
        "_entry": {"group": True, "id": "g"},
        "somethingNew": 1,
    }
    record = Registration.from_doc(doc)
    assert record.previous_substatus == "deviceDataReset" and record.entry == EntryRef(True, "g")
    assert record.to_doc() == doc
    assert record.view() == {k: v for k, v in doc.items() if not k.startswith("_")}
    assert "x509" not in record.service_view() and "somethingNew" not in record.service_view()


def test_one_registration_reads_the_service_settings_once_per_transaction_and_parses_its_token_once(
    store, monkeypatch
):
    enroll(store, "counted")
    reads: dict[int, int] = {}
    parses: list[str] = []
    real_get, real_parse = Transaction.get, sas.parse_sas_token

    def get(self: Transaction, kind: str, key: str) -> object:
        if kind == "service":
            reads[id(self)] = reads.get(id(self), 0) + 1
        return real_get(self, kind, key)

    def parse(text: str) -> sas.SasToken:
        parses.append(text)
        return real_parse(text)

    monkeypatch.setattr(Transaction, "get", get)
    monkeypatch.setattr(sas, "parse_sas_token", parse)
    result = register(store, "counted", name_id=False)  # the registration ID comes from the token
    assert result.assigned
    assert list(reads.values()) == [1, 1]  # the read snapshot that plans, the write that settles
    assert len(parses) == 1


def test_an_unauthorized_device_writes_nothing_when_refusals_are_not_recorded(store):
    enroll(store, "quiet")
    expiry = int((START + timedelta(hours=1)).timestamp())
    token = build_sas_token(device_resource_uri(SCOPE, "quiet"), WRONG, expiry)
    request = RegistrationRequest(SasCredential(token), "quiet")
    before = {kind: dict(docs) for kind, docs in store.data.items()}
    result = provision_phased(StoreTransactions(store), request, clock, record_refusals=False)
    assert result.status == "unauthorized" and store.data == before


def test_every_attempt_is_in_the_history_with_its_outcome(store):
    enroll(store, "logged")
    register(store, "logged", WRONG)
    register(store, "logged")
    with store.transaction() as tx:
        attempts = history(tx, "logged")
    assert [(a["status"], a["enrollment"]) for a in attempts] == [
        ("unauthorized", None),
        ("assigned", "individual:logged"),
    ]
    assert attempts[1]["substatus"] == "initialAssignment" and attempts[1]["assignedHub"] in (HUB_A, HUB_B)
