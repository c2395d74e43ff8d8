"""`dpsctl store info` and `store migrate` between backends."""

from __future__ import annotations

from pathlib import Path

from tests.helpers.cli import Dps


def test_info_names_the_backend_and_counts(dps):
    dps.ok("hub", "add", "h")
    dps.ok("enrollment", "add", "a", "--attestation", "symmetricKey")
    info = dps.json("store", "info")
    expected = "postgresql" if not dps.is_file else ("sqlite" if dps.store.suffix == ".sqlite" else "tinydb")
    assert info["backend"] == expected and info["path"] == str(dps.store) and info["exists"] is True
    assert info["records"]["enrollments"] == 1 and info["records"]["hubs"] == 1
    assert info["sizeBytes"] > 0


def test_migrate_round_trip_is_lossless(dps, tmp_path):
    dps.ok("hub", "add", "h", "--location", "westeurope")
    dps.ok("enrollment-group", "add", "g", "--attestation", "symmetricKey")
    key = dps.ok("enrollment-group", "compute-device-key", "g", "--registration-id", "dev-1").stdout.strip()
    dps.ok("provision", "--registration-id", "dev-1", "--symmetric-key", key)
    assert dps("provision", "--registration-id", "dev-2", "--symmetric-key", key).exit_code == 5  # refused: history only
    # Into another backend and back into a new store of this one.
    other: Path | str = tmp_path / ("other.json" if dps.is_file and dps.store.suffix == ".sqlite" else "other.sqlite")
    moved = dps.json("store", "migrate", "--to", str(other))
    assert moved["records"]["registrations"] == 1 and moved["records"]["history"] == 2
    back = dps.sibling("back")
    Dps(other).ok("store", "migrate", "--to", str(back.store))
    assert back.snapshot() == Dps(other).snapshot() == dps.snapshot()
    assert Dps(other).json("registration", "show", "dev-1")["assignedHub"] == "h.azure-devices.net"
    refused = dps("store", "migrate", "--to", str(other))
    assert refused.exit_code == 4, refused
    refused = Dps(other)("store", "migrate", "--to", str(back.store))  # into an existing database store too
    assert refused.exit_code == 4 and "already exists" in refused.stderr, refused
