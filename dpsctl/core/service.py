"""The provisioning service instance: created on first use, its settings, and the operations count."""

from __future__ import annotations

import secrets
from datetime import datetime

from dpsctl.core.clock import format_timestamp
from dpsctl.core.errors import Conflict, InvalidInput, StoreError
from dpsctl.core.ids import validate_id_scope
from dpsctl.core.service_records import SERVICE_POLICIES, ServiceSettings
from dpsctl.core.validation import choice
from dpsctl.store import Transaction

# Imports inside functions in this module load what only some commands need: every dpsctl process that imports
# the engine would pay for them otherwise (docs/development.md, "Checks that run in CI").

ARM_POLICY = {"hashed": "Hashed", "geoLatency": "GeoLatency", "static": "Static"}


def random_id_scope() -> str:
    """A fresh ID scope in the format DPS uses: `0ne` and 8 upper-case hex digits."""
    return "0ne" + secrets.token_hex(4).upper()


def new_service(now: datetime, *, id_scope: str | None = None, allocation_policy: str = "hashed") -> ServiceSettings:
    """Settings for a new service instance."""
    from dpsctl.core.keys import generate_key

    if allocation_policy.lower() == "custom":
        raise InvalidInput(
            "custom allocation cannot be the service default",
            hint="set it on enrollments with --allocation-policy custom",
        )
    return ServiceSettings(
        id_scope=validate_id_scope(id_scope) if id_scope else random_id_scope(),
        allocation_policy=choice(allocation_policy, SERVICE_POLICIES, "allocation policy"),
        created=format_timestamp(now),
        service_key=generate_key(32),
    )


def find_service(tx: Transaction) -> ServiceSettings | None:
    """The service settings, or None for a store that has none yet (read once per transaction)."""

    def parse() -> ServiceSettings | None:
        doc = tx.get("service", "service")
        return None if doc is None else ServiceSettings.from_stored(doc)

    # Frozen settings, kept until the service record changes: every phase of a registration (and every device of
    # a batch) reads the settings the transaction read first.
    found: ServiceSettings | None = tx.memo("service", "settings", parse)
    return found


def load_service(tx: Transaction, now: datetime) -> ServiceSettings:
    """The service settings, created with a random ID scope the first time a store is written."""
    found = find_service(tx)
    if found is not None:
        return found
    if not tx.writable:
        raise StoreError("the store has no service settings yet", hint="run `dpsctl init`")
    settings = new_service(now)
    save_service(tx, settings)
    return settings


def save_service(tx: Transaction, settings: ServiceSettings) -> None:
    """Write the service settings."""
    tx.put("service", settings.to_dict())


def init_service(tx: Transaction, now: datetime, *, id_scope: str | None, allocation_policy: str) -> ServiceSettings:
    """Create the service explicitly; refuses when the store already has one."""
    if tx.get("service", "service") is not None:
        raise Conflict(
            "the store already exists", hint="use another --db path, or `dpsctl service update` to change settings"
        )
    settings = new_service(now, id_scope=id_scope, allocation_policy=allocation_policy)
    save_service(tx, settings)
    return settings


def update_service(
    tx: Transaction, now: datetime, *, allocation_policy: str | None, location: str | None
) -> ServiceSettings:
    """Change the default allocation policy or the service location."""
    from dataclasses import replace

    settings = load_service(tx, now)
    if allocation_policy is not None:
        if allocation_policy.lower() == "custom":
            raise InvalidInput(
                "custom allocation cannot be the service default, as in DPS",
                hint="set it on enrollments with --allocation-policy custom",
            )
        settings = replace(settings, allocation_policy=choice(allocation_policy, SERVICE_POLICIES, "allocation policy"))
    if location is not None:
        from dpsctl.core.regions import normalize_region

        settings = replace(settings, location=normalize_region(location))
    save_service(tx, settings)
    return settings


OPERATION_SHARDS = 16


def count_operations(tx: Transaction, now: datetime, added: int = 1) -> None:
    """Count billable operations (successful creates/updates of entries, and registrations).

    Added to one of OPERATION_SHARDS counter records, picked once per transaction, never to the service record:
    writers in parallel (a server's pool, a batch, a CLI command) then rarely share a row, and one that does
    waits for at most one short commit. The total is `operations_count`.
    """
    if not added:
        return
    load_service(tx, now)  # a store's first write creates its service settings, as before
    add_operations(tx, added)


def add_operations(tx: Transaction, added: int = 1) -> None:
    """`count_operations` for a caller that has read (or created) the service settings in `tx` already."""
    name = tx.memo((), "operations-shard", lambda: f"operations.{secrets.randbelow(OPERATION_SHARDS):02d}")
    doc = tx.get("counters", name) or {"name": name, "value": 0}
    tx.put("counters", {"name": name, "value": int(doc["value"]) + added})


def operations_count(tx: Transaction, settings: ServiceSettings) -> int:
    """Billable operations: those counted in the service record by stores before issue 12, plus every shard."""
    return settings.operations + sum(int(doc.get("value") or 0) for doc in tx.scan("counters"))


SERVICE_POLICY = "provisioningserviceowner"


def ensure_service_key(tx: Transaction, now: datetime) -> ServiceSettings:
    """The settings with a service key, creating the key (in a writable transaction) for a store that lacks one."""
    from dataclasses import replace

    from dpsctl.core.keys import generate_key

    settings = load_service(tx, now)
    if settings.service_key:
        return settings
    if not tx.writable:
        raise StoreError(
            "the store has no service key yet", hint="run `dpsctl service connection-string` once to create it"
        )
    settings = replace(settings, service_key=generate_key(32))
    save_service(tx, settings)
    return settings


def connection_string(settings: ServiceSettings, host_name: str) -> str:
    """The service connection string of the owner policy, as `dpsctl serve` checks its SAS tokens."""
    return f"HostName={host_name};SharedAccessKeyName={SERVICE_POLICY};SharedAccessKey={settings.service_key}"


def service_view(settings: ServiceSettings, hubs: list[dict], operations: int | None = None) -> dict:
    """The ARM `ProvisioningServiceDescription`-like view shown by `service show` (`operations`: the total count)."""
    return {
        "name": settings.name,
        "location": settings.location,
        "type": "Microsoft.Devices/ProvisioningServices",
        "sku": {"name": "S1", "tier": "Standard", "capacity": 1},
        "properties": {
            "state": "Active",
            "allocationPolicy": ARM_POLICY[settings.allocation_policy],
            "idScope": settings.id_scope,
            "deviceProvisioningHostName": settings.device_endpoint,
            "serviceOperationsHostName": settings.service_host,
            "iotHubs": hubs,
            "operationsCount": settings.operations if operations is None else operations,
            "createdDateTimeUtc": settings.created,
        },
    }


LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")


def _host_only(host: str) -> str:
    """A HostName without its port (`localhost:8443`, `[::1]:8443`), lower-cased."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def check_login(settings: ServiceSettings | None, connection_string: str) -> None:
    """An az `--login` connection string must name this service and carry its owner key (None: a store without settings)."""
    import hmac

    from dpsctl.core.errors import Unauthorized
    from dpsctl.core.validation import connection_string_fields

    fields = connection_string_fields(connection_string)
    missing = [name for name in ("HostName", "SharedAccessKeyName", "SharedAccessKey") if not fields.get(name.lower())]
    if missing:
        raise InvalidInput(
            "--login is not a DPS connection string: it has no " + ", ".join(missing),
            hint="expected HostName=...;SharedAccessKeyName=provisioningserviceowner;SharedAccessKey=...; print this store's with `dpsctl connection-string show`",
        )
    service_host = (
        settings.service_host if settings is not None else ServiceSettings(id_scope="0ne00000000").service_host
    )
    host = _host_only(fields["hostname"])
    if host not in (*LOCAL_HOSTS, service_host.lower()):
        raise InvalidInput(
            f"--login names {fields['hostname']}, but this store is the service {service_host} (also reachable as localhost)",
            hint="point the script at this store's own connection string: `dpsctl connection-string show --query connectionString -o tsv`, or drop --login",
        )
    key = settings.service_key if settings is not None else None
    if (
        fields["sharedaccesskeyname"] != SERVICE_POLICY
        or not key
        or not hmac.compare_digest(fields["sharedaccesskey"].encode(), key.encode())
    ):
        raise Unauthorized(
            f"--login is not authorized for {service_host}: its policy {fields['sharedaccesskeyname']!r} or key is not this store's",
            hint="use this store's connection string: `dpsctl connection-string show --query connectionString -o tsv`",
        )
