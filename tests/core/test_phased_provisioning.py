"""The provisioning engine in phases (issue 12): plan on a snapshot, allocate with no transaction held, settle in a
short write that commits only a decision whose records are unchanged. A fixed clock, no sleeps, a memory store; the
custom allocator is replaced by a function that can change the store while "in flight"."""

from __future__ import annotations

import base64
from dataclasses import replace
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from dpsctl.core import custom_allocation, provisioning
from dpsctl.core.engine import history as engine_history
from dpsctl.core.attestation import SasCredential
from dpsctl.core.errors import Conflict
from dpsctl.core.clock import new_etag
from dpsctl.core.custom_allocation import AllocationResponse
from dpsctl.core.enrollments import add_entry
from dpsctl.core.errors import RegistrationConflict
from dpsctl.core.hubs import add_hub
from dpsctl.core.models import IndividualEnrollment
from dpsctl.core.provisioning import (
    RegistrationRequest,
    StoreTransactions,
    allocate,
    history,
    plan_registration,
    provision_phased,
    settle,
    trim_history,
)
from dpsctl.core.sas import build_sas_token, device_resource_uri
from dpsctl.core.service import count_operations, init_service, load_service, operations_count, save_service
from dpsctl.store import Transaction
from dpsctl.store.memory import MemoryStore
from tests.helpers.constants import HUB_A, HUB_B
from tests.helpers.constants import ID_SCOPE as SCOPE

KEY = base64.b64encode(b"k" * 32).decode()
WRONG = base64.b64encode(b"w" * 32).decode()
START = datetime(2026, 11, 30, 23, 0, tzinfo=timezone.utc)


class Clock:
    """A clock that moves one second each time it is read."""

    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now


class Watched(StoreTransactions):
    """A store's transactions, counting them and knowing which are open (the allocator must see none)."""

    def __init__(self, store: MemoryStore) -> None:
        super().__init__(store)
        self.open = 0
        self.writes = 0

    @contextmanager
    def _counted(self, write: bool) -> Iterator[Transaction]:
        self.open += 1
        self.writes += write
        try:
            with self.store.transaction(write=write) as tx:
                yield tx
        finally:
            self.open -= 1

    def read(self) -> Any:
        return self._counted(False)

    def write(self) -> Any:
        return self._counted(True)


def enrollment(registration_id: str = "dev-1", **fields: Any) -> IndividualEnrollment:
    doc = {
        "registrationId": registration_id,
        "attestation": {"type": "symmetricKey", "symmetricKey": {"primaryKey": KEY, "secondaryKey": KEY}},
        "allocationPolicy": "custom",
        "customAllocationDefinition": {"webhookUrl": "http://127.0.0.1:9/allocate", "apiVersion": "2021-10-01"},
        **fields,
    }
    return IndividualEnrollment.from_dict({k: v for k, v in doc.items() if v is not None})


@pytest.fixture
def store() -> MemoryStore:
    s = MemoryStore()
    with s.transaction(write=True) as tx:
        init_service(tx, START, id_scope=SCOPE, allocation_policy="hashed")
        add_hub(tx, "hub-a")
        add_hub(tx, "hub-b")
        add_entry(tx, enrollment(), START)
    return s


def request(registration_id: str = "dev-1", key: str = KEY) -> RegistrationRequest:
    token = build_sas_token(device_resource_uri(SCOPE, registration_id), key, int((START + timedelta(hours=1)).timestamp()))
    return RegistrationRequest(SasCredential(token), registration_id)


def update(store: MemoryStore, **fields: Any) -> None:
    """Another writer changes enrollment dev-1 (a new etag, as every update)."""
    with store.transaction(write=True) as tx:
        tx.put("enrollments", replace(enrollment(**fields), etag=new_etag()).to_dict())


@pytest.fixture
def allocator(monkeypatch: pytest.MonkeyPatch) -> list[Callable[[dict[str, Any]], str]]:
    """The webhook, replaced: each call pops the next answer function (request -> hub); calls are recorded."""
    answers: list[Callable[[dict[str, Any]], str]] = []

    def fake(url: str, body: dict[str, Any], *, timeout: float) -> AllocationResponse:
        hub = answers.pop(0)(body)
        return AllocationResponse(hub, None, None)

    monkeypatch.setattr(custom_allocation, "call_webhook", fake)
    return answers


def test_the_allocator_runs_with_no_transaction_open_and_its_decision_is_committed(store, allocator):
    source = Watched(store)
    seen: list[int] = []

    def answer(body: dict[str, Any]) -> str:
        seen.append(source.open)
        return body["linkedHubs"][-1]

    allocator.append(answer)
    result = provision_phased(source, request(), Clock())

    assert result.assigned and result.operation["registrationState"]["assignedHub"] == HUB_B
    assert seen == [0] and source.writes == 1
    with store.transaction() as tx:
        assert tx.get("devices", f"{HUB_B}/dev-1") is not None
        assert [h["status"] for h in history(tx)] == ["assigned"]
        assert operations_count(tx, load_service(tx, START)) == 2  # the enrollment, the registration


def test_an_enrollment_changed_in_flight_is_decided_again_on_the_current_one(store, allocator):
    def first(body: dict[str, Any]) -> str:
        update(store, iotHubs=[HUB_A])  # moved to hub-a only, while the webhook "runs"
        return body["linkedHubs"][-1]  # hub-b: stale

    allocator += [first, lambda body: body["linkedHubs"][-1]]
    result = provision_phased(StoreTransactions(store), request(), Clock())

    assert result.assigned and result.operation["registrationState"]["assignedHub"] == HUB_A
    assert not allocator  # called twice
    assert any("individual enrollment 'dev-1' changed while the device was being allocated" in step.message for step in result.explain)


def test_an_enrollment_disabled_in_flight_refuses_the_device(store, allocator):
    def first(body: dict[str, Any]) -> str:
        update(store, provisioningStatus="disabled")
        return body["linkedHubs"][0]

    allocator.append(first)
    result = provision_phased(StoreTransactions(store), request(), Clock())

    assert result.status == "disabled"
    with store.transaction() as tx:
        assert list(tx.scan("devices")) == []
        assert tx.get("registrations", "dev-1")["status"] == "disabled"


def test_changes_during_both_allocations_are_a_conflict_that_leaves_the_registration_alone(store, allocator):
    allocator.append(lambda body: body["linkedHubs"][0])
    assert provision_phased(StoreTransactions(store), request(), Clock()).assigned  # on hub-a
    with store.transaction() as tx:
        before = (tx.get("registrations", "dev-1"), list(tx.scan("devices")))

    def moving(hubs: list[str]) -> Callable[[dict[str, Any]], str]:
        def answer(body: dict[str, Any]) -> str:
            update(store, iotHubs=hubs)
            return body["linkedHubs"][0]

        return answer

    allocator += [moving([HUB_B]), moving([HUB_A, HUB_B])]
    result = provision_phased(StoreTransactions(store), request(), Clock())

    assert result.status == "failed" and isinstance(result.error, RegistrationConflict)
    assert result.operation["registrationState"]["errorCode"] == 409203
    assert isinstance(result.error, Conflict) and "changed while custom allocation ran, twice" in result.error.message
    with store.transaction() as tx:
        assert (tx.get("registrations", "dev-1"), list(tx.scan("devices"))) == before
        assert [h["status"] for h in history(tx)] == ["assigned", "failed"]


def test_a_failed_authentication_writes_nothing_when_refusals_are_not_recorded(store):
    source = Watched(store)
    before = {kind: dict(docs) for kind, docs in store.data.items()}

    result = provision_phased(source, request(key=WRONG), Clock(), record_refusals=False)

    assert result.status == "unauthorized" and result.operation["errorCode"] == 401002
    assert source.writes == 0 and store.data == before

    recorded = provision_phased(source, request(key=WRONG), Clock())
    assert recorded.status == "unauthorized" and source.writes == 1
    with store.transaction() as tx:
        assert [h["status"] for h in history(tx)] == ["unauthorized"]
        assert tx.get("registrations", "dev-1") is None


def test_a_disabled_enrollment_refusing_an_unproven_credential_writes_nothing_either(store):
    update(store, provisioningStatus="disabled")
    source = Watched(store)
    before = {kind: dict(docs) for kind, docs in store.data.items()}

    unproven = provision_phased(source, request(key=WRONG), Clock(), record_refusals=False)
    assert unproven.status == "disabled" and source.writes == 0 and store.data == before

    # With its own key the device proved itself: the refusal is recorded whatever record_refusals says.
    proven = provision_phased(source, request(), Clock(), record_refusals=False)
    assert proven.status == "disabled" and source.writes == 1
    with store.transaction() as tx:
        assert tx.get("registrations", "dev-1")["status"] == "disabled"
        assert [h["status"] for h in history(tx)] == ["disabled"]


def test_a_fast_policy_plan_made_before_a_change_is_made_again_in_the_write(store):
    update(store, allocationPolicy="hashed", customAllocationDefinition=None)
    clock = Clock()
    with store.transaction() as tx:
        plan = plan_registration(tx, request(), clock())
    assert not plan.needs_allocator
    update(store, allocationPolicy="static", customAllocationDefinition=None, iotHubs=[HUB_B])
    with store.transaction(write=True) as tx:
        result = settle(tx, plan, None, clock())
    assert result.assigned and result.operation["registrationState"]["assignedHub"] == HUB_B  # type: ignore[union-attr]


def test_a_custom_plan_that_went_stale_comes_back_for_another_allocation(store, allocator):
    clock = Clock()
    with store.transaction() as tx:
        plan = plan_registration(tx, request(), clock())
    allocator.append(lambda body: body["linkedHubs"][0])
    decision = allocate(plan, 10.0)
    update(store, iotHubs=[HUB_B])
    with store.transaction(write=True) as tx:
        again = settle(tx, plan, decision, clock(), last=False)
        assert isinstance(again, provisioning.Plan) and again.needs_allocator and not tx.dirty
    assert [h.name for h in again.candidates] == [HUB_B]


def test_history_ids_are_time_ordered_and_trimmed_to_the_limit_newest_kept(store, monkeypatch):
    monkeypatch.setattr(engine_history, "HISTORY_LIMIT", 3)
    with store.transaction(write=True) as tx:
        # Two attempts recorded by a store before issue 12: integer sequences, older than any new ID.
        for n in (1, 2):
            tx.put("history", {"sequence": n, "timestampUtc": "t", "registrationId": f"old-{n}", "status": "assigned"})
    update(store, allocationPolicy="hashed", customAllocationDefinition=None)
    clock = Clock()
    for _ in range(3):
        assert provision_phased(StoreTransactions(store), request(), clock).assigned
    with store.transaction(write=True) as tx:
        shown = history(tx)
        assert [h["registrationId"] for h in shown] == ["dev-1"] * 3  # the newest 3, though the store holds up to 5
        assert [h["timestampUtc"] for h in shown] == sorted(h["timestampUtc"] for h in shown)
        trim_history(tx)
    assert len(store.data["history"]) == 3 and all(isinstance(h["sequence"], str) for h in store.data["history"].values())


def test_operations_are_counted_in_shards_beside_an_older_stores_count(store):
    with store.transaction(write=True) as tx:
        save_service(tx, load_service(tx, START).with_operations(40))  # what a store from before issue 12 counted there
    for _ in range(5):
        with store.transaction(write=True) as tx:
            count_operations(tx, START, 2)
    with store.transaction() as tx:
        assert operations_count(tx, load_service(tx, START)) == 40 + 1 + 10  # the old count, the enrollment, these
    assert store.data["service"]["service"]["operations"] == 40  # never rewritten by counting
    assert sum(doc["value"] for doc in store.data["counters"].values()) == 11
