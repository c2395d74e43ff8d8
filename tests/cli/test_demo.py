"""`dpsctl demo`, the README's first command: a real run, and a rerun on the same store."""

from __future__ import annotations


def test_demo_provisions_three_kinds_of_device_and_can_run_again(dps, tmp_path):
    folder = tmp_path / "demo"
    first = dps("demo", "--dir", str(folder))
    assert first.exit_code == 0, first
    assert "$ dpsctl provision --tpm" in first.stderr and "warning" in first.stderr  # commands shown, test keys flagged
    registrations = dps.json("registration", "list")
    kinds = {next(k for k in ("symmetricKey", "x509", "tpm") if k in r) for r in registrations}
    assert kinds == {"symmetricKey", "x509", "tpm"}
    assert all(r["status"] == "assigned" for r in registrations) and len(registrations) == 5
    assert (folder / "demo-root.key.pem").stat().st_mode & 0o777 == 0o600
    again = dps("demo", "--dir", str(folder))
    assert again.exit_code == 0, again
    assert len(dps.json("registration", "list")) == 5
