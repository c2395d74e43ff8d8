"""Custom allocation: the request DPS sends, a real local webhook, a local allocation command."""

from __future__ import annotations

import json
import random
import shlex
import socket
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dpsctl.core.custom_allocation import (
    MAX_RESPONSE_BYTES,
    AllocationResponse,
    build_allocation_request,
    call_command,
    call_webhook,
    parse_allocation_response,
)
from dpsctl.core.errors import AllocationFailed, InvalidInput
from tests.helpers.webhook import Webhook

TOASTERS = "custom-allocation-toasters-hub.azure-devices.net"
HEATPUMPS = "custom-allocation-heatpumps-hub.azure-devices.net"
LINKED = [TOASTERS, HEATPUMPS]
FUNCTION_KEY = "s3cr3t-function-key"

GROUP = {
    "enrollmentGroupId": "contoso-custom-allocated-devices",
    "attestation": {"type": "symmetricKey"},
    "allocationPolicy": "custom",
}
INDIVIDUAL = {"registrationId": "toaster-007", "attestation": {"type": "x509"}, "deviceId": "toaster-007"}


def group_request(**overrides: object) -> dict:
    arguments: dict = {
        "enrollment": GROUP,
        "is_group": True,
        "registration_id": "breakroom499-contoso-tstrsd-007",
        "linked_hubs": LINKED,
        "attestation": {"symmetricKey": {}},
    }
    return build_allocation_request(**{**arguments, **overrides})


# --- the AllocationRequest --------------------------------------------------------------------


def test_a_group_device_request_carries_the_group_context_and_linked_hubs() -> None:
    request = group_request(payload={"modelId": "dtmi:contoso:toaster;1"})
    assert request == {
        "enrollmentGroup": GROUP,
        "deviceRuntimeContext": {
            "registrationId": "breakroom499-contoso-tstrsd-007",
            "symmetricKey": {},
            "payload": {"modelId": "dtmi:contoso:toaster;1"},
        },
        "linkedHubs": LINKED,
    }
    assert "individualEnrollment" not in request


def test_an_individual_device_request_uses_individual_enrollment() -> None:
    request = build_allocation_request(
        enrollment=INDIVIDUAL,
        is_group=False,
        registration_id="toaster-007",
        linked_hubs=[TOASTERS],
        attestation={"x509": {"clientCertificate": "MIIB..."}},
    )
    assert request["individualEnrollment"] == INDIVIDUAL
    assert "enrollmentGroup" not in request
    assert request["deviceRuntimeContext"] == {
        "registrationId": "toaster-007",
        "x509": {"clientCertificate": "MIIB..."},
    }


def test_a_previously_assigned_device_reports_its_current_hub_and_device_id() -> None:
    context = group_request(current_hub=TOASTERS, current_device_id="breakroom499-contoso-tstrsd-007")[
        "deviceRuntimeContext"
    ]
    assert context["currentIotHubHostName"] == TOASTERS
    assert context["currentDeviceId"] == "breakroom499-contoso-tstrsd-007"


def test_a_first_time_device_has_no_current_hub_or_payload() -> None:
    context = group_request()["deviceRuntimeContext"]
    assert {"currentIotHubHostName", "currentDeviceId", "payload"}.isdisjoint(context)


def test_the_request_is_a_copy_of_the_callers_records() -> None:
    enrollment = {"enrollmentGroupId": "g", "initialTwin": {"tags": {"a": 1}}}
    hubs = [TOASTERS]
    request = group_request(enrollment=enrollment, linked_hubs=hubs)
    request["enrollmentGroup"]["initialTwin"]["tags"]["a"] = 2
    request["linkedHubs"].append(HEATPUMPS)
    assert enrollment["initialTwin"]["tags"]["a"] == 1
    assert hubs == [TOASTERS]


@pytest.mark.parametrize("attestation", [{"password": {}}, {"x509": {}, "tpm": {}}])
def test_the_runtime_context_takes_exactly_one_known_attestation_kind(attestation: dict) -> None:
    with pytest.raises(InvalidInput):
        group_request(attestation=attestation)


# --- a real local webhook ---------------------------------------------------------------------


@pytest.fixture
def webhook_key() -> str:
    """The webhook fixture (tests/conftest.py) serves under this module's function key."""
    return FUNCTION_KEY


def test_the_webhook_gets_the_request_and_its_choice_twin_and_payload_come_back(webhook: Webhook) -> None:
    twin = {"properties": {"desired": {"state": "ready", "darknessSetting": "medium"}}, "tags": {"deviceType": "toaster"}}
    webhook.answer({"iotHubHostName": HEATPUMPS.upper(), "initialTwin": twin, "payload": {"property1": "value1"}})
    request = group_request(current_hub=TOASTERS)

    response = call_webhook(webhook.url, request)

    assert response == AllocationResponse(iot_hub_host_name=HEATPUMPS, initial_twin=twin, payload={"property1": "value1"})
    [sent] = webhook.requests
    assert sent["path"] == f"/api/allocate?code={FUNCTION_KEY}"
    assert sent["contentType"] == "application/json; charset=utf-8"
    assert sent["body"] == request


def test_an_answer_with_only_a_hub_has_no_twin_or_payload(webhook: Webhook) -> None:
    webhook.answer({"iotHubHostName": TOASTERS, "initialTwin": None})
    assert call_webhook(webhook.url, group_request()) == AllocationResponse(TOASTERS, None, None)


def test_a_failing_webhook_reports_its_status_without_the_function_key(webhook: Webhook) -> None:
    webhook.answer({"error": "boom"}, status=500)
    with pytest.raises(AllocationFailed) as caught:
        call_webhook(webhook.url, group_request())
    assert "500" in caught.value.message
    assert f"{webhook.base_url}/api/allocate" in caught.value.message
    assert FUNCTION_KEY not in f"{caught.value.message} {caught.value.hint}"


def test_an_unauthorised_webhook_hints_at_the_function_key(webhook: Webhook) -> None:
    webhook.answer({}, status=401)
    with pytest.raises(AllocationFailed) as caught:
        call_webhook(webhook.url, group_request())
    assert "401" in caught.value.message
    assert caught.value.hint is not None and "?code=" in caught.value.hint


def test_a_webhook_answering_html_fails(webhook: Webhook) -> None:
    webhook.respond = lambda request: (200, b"<html>Function host is not running.</html>")
    with pytest.raises(AllocationFailed, match="did not answer with JSON"):
        call_webhook(webhook.url, group_request())


@pytest.mark.rule("§9/webhook-hub-must-be-linked")
def test_a_webhook_choosing_a_hub_that_is_not_linked_fails(webhook: Webhook) -> None:
    webhook.answer({"iotHubHostName": "other.azure-devices.net"})
    with pytest.raises(AllocationFailed) as caught:
        call_webhook(webhook.url, group_request())
    assert caught.value.message == (
        f"webhook {webhook.base_url}/api/allocate answered with iotHubHostName 'other.azure-devices.net', "
        f"which is not one of the linked hubs: {TOASTERS}, {HEATPUMPS}"
    )


def test_a_slow_webhook_times_out(webhook: Webhook) -> None:
    webhook.answer({"iotHubHostName": TOASTERS})
    webhook.delay = 60.0  # held until the test ends: only the client's own deadline gives this outcome
    with pytest.raises(AllocationFailed, match=r"did not answer within 0\.5 s"):
        call_webhook(webhook.url, group_request(), timeout=0.5)


def test_an_oversized_answer_is_refused(webhook: Webhook) -> None:
    webhook.answer({"iotHubHostName": TOASTERS, "payload": "x" * MAX_RESPONSE_BYTES})
    with pytest.raises(AllocationFailed, match="more than"):
        call_webhook(webhook.url, group_request())


def test_nobody_listening_is_a_refused_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("http_proxy", raising=False)
    monkeypatch.delenv("HTTP_PROXY", raising=False)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(AllocationFailed, match="refused the connection"):
        call_webhook(f"http://127.0.0.1:{port}/api/allocate?code={FUNCTION_KEY}", group_request(), timeout=2)


@pytest.mark.parametrize(
    "url",
    [f"ftp://example.com/alloc?code={FUNCTION_KEY}", f"file:///etc/passwd?code={FUNCTION_KEY}", "allocate.py", "http:///x"],
)
def test_only_http_and_https_webhooks_are_accepted(url: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        call_webhook(url, group_request())
    assert FUNCTION_KEY not in caught.value.message


# --- a local allocation command ---------------------------------------------------------------


def python_command(script: str) -> str:
    return shlex.join([sys.executable, "-c", script])


CHOOSE_SECOND_HUB = """
import json, sys
request = json.load(sys.stdin)
print(json.dumps({
    "iotHubHostName": request["linkedHubs"][1],
    "payload": {"echo": request["deviceRuntimeContext"]["registrationId"]},
}))
"""


def test_an_allocation_command_reads_the_request_on_stdin_and_answers_on_stdout() -> None:
    response = call_command(python_command(CHOOSE_SECOND_HUB), group_request())
    assert response == AllocationResponse(
        iot_hub_host_name=HEATPUMPS, initial_twin=None, payload={"echo": "breakroom499-contoso-tstrsd-007"}
    )


def test_a_command_runs_without_a_shell() -> None:
    # With a shell, `$HOME` would expand and `;` would end the command; here they are plain arguments.
    script = "import json, sys; print(json.dumps({'iotHubHostName': sys.argv[1], 'payload': sys.argv[2:]}))"
    command = shlex.join([sys.executable, "-c", script, TOASTERS]) + " '$HOME;' echo"
    assert call_command(command, group_request()).payload == ["$HOME;", "echo"]


def test_a_command_exiting_non_zero_fails_with_its_first_stderr_line() -> None:
    script = "import sys; sys.stderr.write('no hub for toasters today\\nsecond line\\n'); sys.exit(3)"
    with pytest.raises(AllocationFailed) as caught:
        call_command(python_command(script), group_request())
    assert "status 3" in caught.value.message
    assert "no hub for toasters today" in caught.value.message
    assert "second line" not in caught.value.message


def test_a_long_stderr_line_is_truncated() -> None:
    script = "import sys; sys.stderr.write('e' * 5000); sys.exit(1)"
    with pytest.raises(AllocationFailed) as caught:
        call_command(python_command(script), group_request())
    assert len(caught.value.message) < 400


def test_a_command_printing_garbage_fails() -> None:
    with pytest.raises(AllocationFailed, match="did not answer with JSON"):
        call_command(python_command("print('hub two, please')"), group_request())


def test_a_command_answering_a_json_array_fails() -> None:
    with pytest.raises(AllocationFailed, match="an array, not an object"):
        call_command(python_command(f"print('[\"{TOASTERS}\"]')"), group_request())


def test_a_command_that_sleeps_past_the_timeout_is_stopped() -> None:
    # Without the timeout the command would run its 30 s and answer nothing: another message, and no wall clock needed.
    with pytest.raises(AllocationFailed, match=r"did not answer within 0\.5 s"):
        call_command(python_command("import time; time.sleep(30)"), group_request(), timeout=0.5)


def test_a_missing_command_fails_without_echoing_its_arguments() -> None:
    with pytest.raises(AllocationFailed) as caught:
        call_command(f"dpsctl-no-such-allocator --key {FUNCTION_KEY}", group_request())
    assert "not found" in caught.value.message
    assert "dpsctl-no-such-allocator" in caught.value.message
    assert FUNCTION_KEY not in caught.value.message


@pytest.mark.parametrize("command", ["", "   ", "allocate 'unbalanced"])
def test_an_empty_or_unparsable_command_is_invalid_input(command: str) -> None:
    with pytest.raises(InvalidInput):
        call_command(command, group_request())


# --- parsing the AllocationResponse -----------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "complaint"),
    [
        ("{}", "without iotHubHostName"),
        ('{"iotHubHostName": 7}', "iotHubHostName a number, not a string"),
        (f'{{"iotHubHostName": "{TOASTERS}", "initialTwin": []}}', "initialTwin an array"),
        (f'{{"iotHubHostName": "{TOASTERS}", "initialTwin": {{"tags": "x"}}}}', "initialTwin.tags a string"),
        (
            f'{{"iotHubHostName": "{TOASTERS}", "initialTwin": {{"properties": {{"desired": 1}}}}}}',
            "initialTwin.properties.desired a number",
        ),
        (f'{{"iotHubHostName": "{TOASTERS}", "payload": NaN}}', "did not answer with JSON"),
        (b"\xff\xfe{}", "not UTF-8"),
        ("[" * 100_000, "did not answer with JSON"),
    ],
)
def test_malformed_answers_say_what_is_wrong(body: str | bytes, complaint: str) -> None:
    with pytest.raises(AllocationFailed) as caught:
        parse_allocation_response(body, LINKED, source="webhook https://x/y")
    assert caught.value.message.startswith("webhook https://x/y ")
    assert complaint in caught.value.message


def test_a_byte_order_mark_is_tolerated() -> None:
    body = "\ufeff" + json.dumps({"iotHubHostName": TOASTERS})
    assert parse_allocation_response(body.encode(), LINKED, source="s").iot_hub_host_name == TOASTERS


def test_with_no_linked_hubs_no_answer_can_be_right() -> None:
    with pytest.raises(AllocationFailed, match=r"linked hubs: \(none\)"):
        parse_allocation_response(json.dumps({"iotHubHostName": TOASTERS}), [], source="s")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


@given(st.text() | st.binary())
def test_arbitrary_text_is_either_an_answer_or_allocation_failed(body: str | bytes) -> None:
    try:
        response = parse_allocation_response(body, LINKED, source="s")
    except AllocationFailed:
        return
    assert response.iot_hub_host_name in LINKED


@given(st.dictionaries(st.sampled_from(["iotHubHostName", "initialTwin", "payload", "other"]), json_values))
def test_arbitrary_json_objects_are_either_an_answer_or_allocation_failed(document: dict) -> None:
    try:
        response = parse_allocation_response(json.dumps(document), LINKED, source="s")
    except AllocationFailed:
        return
    assert response.iot_hub_host_name in LINKED


@given(st.sampled_from(LINKED), st.randoms(use_true_random=False), json_values)
def test_the_chosen_hub_comes_back_in_the_linked_spelling(hub: str, rng: random.Random, payload: object) -> None:
    typed = "".join(c.upper() if rng.random() < 0.5 else c for c in hub)
    response = parse_allocation_response(json.dumps({"iotHubHostName": typed, "payload": payload}), LINKED, source="s")
    assert response.iot_hub_host_name == hub
    assert response.payload == payload
