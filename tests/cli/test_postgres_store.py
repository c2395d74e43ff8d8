"""PostgreSQL store locations: URLs, refusals that create nothing, secrets kept out of output, and migration
SQLite -> PostgreSQL -> SQLite with identical exports."""

from __future__ import annotations

import json
import os
import re


from tests.helpers.cli import Dps, dpsctl_process

KEY = "Cn4WLBwypDmqeJnK273m7DPBN5AGaGXAEf832r4+UOg="


def test_an_unknown_scheme_is_refused_and_nothing_is_created(tmp_path):
    for url in ("mysql://dps:s3cret@db/fleet", "sqlite:///tmp/x.db", "https://example.com/store"):
        run = dpsctl_process("--db", url, "enrollment", "add", "e1", "--attestation", "symmetricKey", cwd=tmp_path)
        assert run.returncode == 2, run
        lines = run.stderr.splitlines()
        assert len(lines) == 2 and lines[0].startswith("error: store ") and "cannot open" in lines[0] and lines[1].startswith("hint: "), run.stderr
        assert "s3cret" not in run.stderr and "Traceback" not in run.stderr
    assert list(tmp_path.iterdir()) == []  # no folder named `mysql:`, no TinyDB file under it


def test_a_postgresql_url_without_the_driver_is_refused_with_the_install_hint(tmp_path):
    # A Python that cannot import psycopg, as after `pip install dpsctl` without the extra.
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    (blocker / "psycopg.py").write_text("raise ImportError('No module named psycopg')\n")
    env = {**os.environ, "PYTHONPATH": f"{blocker}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    run = dpsctl_process("--db", "postgresql://dps:s3cret@localhost/fleet", "enrollment", "list", cwd=tmp_path, env=env)
    assert run.returncode == 1, run
    assert run.stderr.splitlines() == [
        "error: store postgresql://dps@localhost/fleet is a PostgreSQL URL, but the PostgreSQL driver is not installed",
        "hint: pip install 'dpsctl[postgres]' (psycopg 3 and psycopg_pool)",
    ]
    assert [p.name for p in tmp_path.iterdir()] == ["blocker"]


def test_an_unreachable_server_is_one_line_and_never_shows_the_password(tmp_path):
    url = "postgresql://dps:s3cret-pw@127.0.0.1:1/fleet?connect_timeout=2"
    for args in (("enrollment", "list"), ("store", "info"), ("enrollment", "add", "e", "--attestation", "symmetricKey")):
        run = dpsctl_process("--db", url, *args, cwd=tmp_path)
        assert run.returncode == 1, run
        lines = run.stderr.splitlines()
        assert len(lines) == 2 and lines[0].startswith("error: store postgresql://dps@127.0.0.1:1/fleet?connect_timeout=2 cannot be reached"), run.stderr
        assert "s3cret" not in run.stderr + run.stdout
    assert list(tmp_path.iterdir()) == []


def test_a_bad_schema_parameter_is_refused(tmp_path):
    for url, words in (
        ("postgresql://dps@localhost/fleet?schema=Robert;DROP", "not a plain lower-case SQL name"),
        ("postgresql://dps@localhost/fleet?schema=a&schema=b", "more than once"),
        ("postgresql://dps@localhost/fleet?pool_size=0", "pool_size"),
    ):
        run = dpsctl_process("--db", url, "enrollment", "list", cwd=tmp_path)
        assert run.returncode == 2 and words in run.stderr, run


def test_the_password_is_never_shown(postgres_url, tmp_path):
    # The test server trusts local users, so any password is accepted: it must still never be echoed.
    url = postgres_url.replace("postgresql://dpsctl@", "postgresql://dpsctl:Pa55-w0rd@", 1)
    assert "Pa55-w0rd" in url
    dps = Dps(url)
    dps.ok("hub", "add", "h")
    outputs = [
        dps.ok("store", "info").stdout,
        dps.ok("store", "info", "-o", "json").stdout,
        dps.ok("store", "migrate", "--to", str(tmp_path / "copy.sqlite")).stdout,
        dps("store", "migrate", "--to", str(tmp_path / "copy.sqlite")).stderr,  # refused: exists
        dps("--db", url, "store", "migrate", "--to", url).stderr,
    ]
    info = json.loads(outputs[1])
    assert info["path"] == postgres_url and info["backend"] == "postgresql"
    assert all("Pa55" not in text for text in outputs), outputs
    back = Dps(tmp_path / "copy.sqlite")("store", "migrate", "--to", url)  # into it: exists
    assert back.exit_code == 4 and "Pa55" not in back.stderr + back.stdout, back


def test_each_schema_is_a_store_of_its_own(postgres_url):
    a, b = Dps(postgres_url), Dps(postgres_url).sibling("b")
    a.ok("enrollment", "add", "only-in-a", "--attestation", "symmetricKey")
    assert b("enrollment", "list").exit_code == 3 and not b.exists()  # a read creates nothing
    b.ok("enrollment", "add", "only-in-b", "--attestation", "symmetricKey")
    assert [e["registrationId"] for e in a.json("enrollment", "list")] == ["only-in-a"]
    assert a.json("service", "show")["properties"]["idScope"] != b.json("service", "show")["properties"]["idScope"]


def test_migrate_sqlite_to_postgresql_to_sqlite_exports_identically(postgres_url, tmp_path):
    from dpsctl.core.certs import issue_root, write_certificates

    first = Dps(tmp_path / "first.sqlite")
    first.ok("init", "--id-scope", "0ne00000ABC")
    first.ok("hub", "add", "hub-east", "--location", "eastus")
    first.ok("hub", "add", "hub-west", "--location", "westus", "--weight", "2")
    first.ok("enrollment-group", "add", "fleet", "--attestation", "symmetricKey", "--primary-key", KEY, "--initial-twin", '{"tags": {"site": "lab"}}')
    for i in range(30):
        first.ok("enrollment", "add", f"dev-{i:02d}", "--attestation", "symmetricKey")
    root_cert, _ = issue_root("Lab Root")
    root = tmp_path / "root.pem"
    write_certificates(root, [root_cert])
    first.ok("ca", "add", "lab-root", "--cert", str(root), "--verified")
    first.ok("enrollment-group", "add", "cameras", "--attestation", "x509", "--ca-ref", "lab-root")
    first.ok("provision", "--count", "25", "--id-pattern", "sensor-{n:03d}", "--group", "fleet", "-o", "json")
    exported = first.ok("export", "--show-keys", "-o", "json").stdout

    middle = Dps(postgres_url)
    first.ok("store", "migrate", "--to", postgres_url)
    last = Dps(tmp_path / "last.sqlite")
    middle.ok("store", "migrate", "--to", str(last.store))

    assert middle.ok("export", "--show-keys", "-o", "json").stdout == exported
    assert last.ok("export", "--show-keys", "-o", "json").stdout == exported
    assert first.snapshot() == middle.snapshot() == last.snapshot()
    assert len(last.json("registration", "list")) == 25 and len(last.json("registration", "history")) == 25


def test_a_store_location_is_shown_as_given(postgres_url):
    assert re.search(r"\?.*schema=t_[0-9a-f]{12}$", postgres_url)
    store = Dps(postgres_url)
    store.ok("init")
    run = store.ok("store", "info", "-o", "json")
    assert run.json()["path"] == postgres_url
