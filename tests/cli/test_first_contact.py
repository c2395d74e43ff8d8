"""First contact and shell ergonomics (issue 14), as a new user meets them: through the installed `dpsctl`, in real
processes, in an empty folder; a pseudo-terminal where the width matters."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

BIN = Path(sys.executable).parent / "dpsctl"
DPSCTL = [str(BIN)] if BIN.exists() else [sys.executable, "-m", "dpsctl"]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DPSCTL_") and k not in ("COLUMNS", "LINES")}
    env.update(extra)
    return env


def run(folder: Path, *args: str, input: str | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    """`dpsctl ARGS` in `folder`, as typed in a shell (no DPSCTL_* variables unless given)."""
    return subprocess.run([*DPSCTL, *args], cwd=folder, env=_env(**env), input=input, capture_output=True, text=True, timeout=120)


def ok(folder: Path, *args: str, **env: str) -> str:
    done = run(folder, *args, **env)
    assert done.returncode == 0, (args, done.stdout, done.stderr)
    return done.stdout


# --------------------------------------------------------------------------- help


@pytest.mark.parametrize("args", [[], ["hub"], ["enrollment-group"], ["store"]], ids=["dpsctl", "hub", "enrollment-group", "store"])
def test_bare_command_and_bare_group_print_help_and_exit_0(tmp_path, args):
    done = run(tmp_path, *args)
    assert done.returncode == 0 and done.stderr == "", done
    assert done.stdout.startswith("Usage: dpsctl") and "Commands:" in done.stdout
    assert list(tmp_path.iterdir()) == []  # help opens no store


def test_help_redacts_nothing_and_lists_whole_summaries(tmp_path):
    root = ok(tmp_path, "--help")
    assert "DeviceRegistrationState" in root and "<redacted>" not in root
    hub = ok(tmp_path, "hub", "--help")
    assert "policy participation or connection string." in " ".join(hub.split())  # not cut with "..."
    assert "..." not in hub.split("Commands:")[1]


def test_help_uses_conventional_placeholders(tmp_path):
    add = ok(tmp_path, "enrollment", "add", "--help")
    assert "Usage: dpsctl enrollment add [OPTIONS] REGISTRATION_ID" in add
    assert "--hub TEXT" in add and "Repeatable." in add and "--cert FILE" in add
    assert "--attestation symmetricKey|x509|tpm" in add and "-o, --output table|json|yaml|tsv|none" in add
    for text in (add, ok(tmp_path, "--help"), ok(tmp_path, "service", "connection-string", "--help"), ok(tmp_path, "registration", "list", "--help")):
        assert not re.search(r"<(str|int|float|bool|path)|list\[|\{[a-z_]+\}|int range", text), text
    update = " ".join(ok(tmp_path, "enrollment", "update", "--help").split())
    assert "kept if absent" in update and "generated if absent" not in update


def test_every_command_help_is_free_of_python_types():
    from dpsctl.cli import reference

    for path, command in reference.walk(reference.root_command()):
        import typer

        ctx = typer._click.Context(command, info_name=" ".join(path))
        text = command.get_help(ctx)
        assert not re.search(r"<(str|int|float|bool|path)|list\[|int range", text), (path, text)
        assert not re.search(r"\{[a-z_]+\}", text.splitlines()[0]), (path, text)  # the usage line names arguments in capitals


def test_did_you_mean_at_every_level(tmp_path):
    top = run(tmp_path, "enrolment", "list")
    assert top.returncode == 2 and "Did you mean 'enrollment'" in top.stderr
    sub = run(tmp_path, "hub", "lst")
    assert sub.returncode == 2 and "Did you mean 'list'" in sub.stderr
    option = run(tmp_path, "hub", "list", "--show-key")
    assert option.returncode == 2 and "--show-keys" in option.stderr


# --------------------------------------------------------------------------- completion


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_show_completion_prints_the_script_of_each_shell(tmp_path, shell):
    script = ok(tmp_path, "--show-completion", shell)
    assert "_DPSCTL_COMPLETE=complete_" + shell in script.replace(" ", "") or f"complete_{shell}" in script


def test_install_completion_writes_the_script_where_the_shell_reads_it(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    done = run(tmp_path, "--install-completion", "bash", HOME=str(home))
    assert done.returncode == 0, done
    assert "source" in (home / ".bashrc").read_text() and "complete_bash" in (home / ".bash_completions" / "dpsctl.sh").read_text()


def _complete(folder: Path, line: str) -> list[str]:
    words = line.split(" ")
    done = run(folder, _DPSCTL_COMPLETE="complete_bash", COMP_WORDS=line, COMP_CWORD=str(len(words) - 1))
    assert done.returncode == 0, done
    return done.stdout.split()


def test_completion_of_commands_options_and_stored_ids(tmp_path):
    assert _complete(tmp_path, "dpsctl enr") == ["enrollment", "enrollment-group"]
    assert _complete(tmp_path, "dpsctl enrollment show ") == [] and list(tmp_path.iterdir()) == []  # no store: none made
    ok(tmp_path, "hub", "add", "factory-eu")
    ok(tmp_path, "enrollment", "add", "sensor-001", "--attestation", "symmetricKey")
    ok(tmp_path, "enrollment", "add", "sensor-002", "--attestation", "symmetricKey")
    ok(tmp_path, "enrollment-group", "add", "cameras", "--attestation", "symmetricKey")
    assert _complete(tmp_path, "dpsctl enrollment show sen") == ["sensor-001", "sensor-002"]
    assert _complete(tmp_path, "dpsctl enrollment-group show ") == ["cameras"]
    assert _complete(tmp_path, "dpsctl hub show ") == ["factory-eu.azure-devices.net"]
    assert _complete(tmp_path, "dpsctl registration list --enrollment-group ") == ["cameras"]
    assert "--show-keys" in _complete(tmp_path, "dpsctl enrollment list --")
    assert "add" in _complete(tmp_path, "dpsctl hub ")


# --------------------------------------------------------------------------- global options, missing stores


def test_global_options_work_before_or_after_the_sub_command(tmp_path):
    ok(tmp_path, "--db", "other.json", "hub", "add", "h1")
    assert json.loads(ok(tmp_path, "hub", "list", "--db", "other.json", "-o", "json"))[0]["name"] == "h1.azure-devices.net"
    assert ok(tmp_path, "-o", "tsv", "--db", "other.json", "hub", "list", "--query", "[].name") == "h1.azure-devices.net\n"
    assert ok(tmp_path, "hub", "list", "--query", "[].location", "--db", "other.json", "-o", "tsv") == "eastus\n"  # the default location
    # -o after the sub-command wins over -o before it and over DPSCTL_OUTPUT; -o before wins over DPSCTL_OUTPUT
    assert ok(tmp_path, "-o", "yaml", "hub", "list", "--db", "other.json", "-o", "tsv", "--query", "[0].name") == "h1.azure-devices.net\n"
    assert ok(tmp_path, "-o", "tsv", "--db", "other.json", "hub", "list", "--query", "length(@)", DPSCTL_OUTPUT="json") == "1\n"
    assert not (tmp_path / "dps.json").exists()


READ_ONLY = [
    ["registration", "list"],
    ["hub", "list"],
    ["enrollment", "list"],
    ["enrollment", "show", "x"],
    ["service", "show"],
    ["stats"],
    ["export"],
    ["device", "list"],
    ["store", "info"],
    ["--db", "typo.jsn", "hub", "list"],
    ["--db", "fleet.sqlite", "stats"],
    ["hub", "list", "--db", "fleet.db"],
]


@pytest.mark.parametrize("args", READ_ONLY, ids=[" ".join(a) for a in READ_ONLY])
def test_a_read_only_command_on_a_missing_store_exits_3_and_creates_nothing(tmp_path, args):
    done = run(tmp_path, *args)
    assert done.returncode == 3, done
    error, hint = done.stderr.splitlines()
    store = args[args.index("--db") + 1] if "--db" in args else "dps.json"
    assert error.startswith("error: ") and store in error and "does not exist" in error
    assert "dpsctl init" in hint and "--db" in hint and "DPSCTL_DB" in hint
    assert done.stdout == "" and list(tmp_path.iterdir()) == []  # no store, no lock file


def test_only_a_command_that_writes_creates_the_store(tmp_path):
    ok(tmp_path, "hub", "add", "h1")
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")) == ["dps.json"]
    assert "linked hubs" in ok(tmp_path, "stats")


def test_a_filter_naming_nothing_exits_3_like_show(tmp_path):
    ok(tmp_path, "hub", "add", "h1")
    ok(tmp_path, "enrollment-group", "add", "g", "--attestation", "symmetricKey")
    for args in (["registration", "list", "--hub", "nohub"], ["registration", "list", "--enrollment-group", "nogroup"],
                 ["registration", "list", "--status", "bogus"], ["device", "list", "--hub", "nohub"],
                 ["enrollment", "list", "--status", "sometimes"], ["enrollment-group", "list", "--attestation", "magic"]):
        done = run(tmp_path, *args)
        assert done.returncode == 3 and done.stdout == "" and done.stderr.startswith("error: "), (args, done)
    assert run(tmp_path, "hub", "show", "nohub").returncode == 3
    # existing names with nothing under them are an empty list, not an error
    assert json.loads(ok(tmp_path, "registration", "list", "--hub", "h1", "--enrollment-group", "g", "--status", "failed", "-o", "json")) == []


# --------------------------------------------------------------------------- output formats for scripts


def _group_with_device(folder: Path) -> None:
    ok(folder, "hub", "add", "h1")
    ok(folder, "enrollment-group", "add", "sensors", "--attestation", "symmetricKey")


def test_tsv_prints_a_single_value_bare_so_a_shell_can_capture_it(tmp_path):
    _group_with_device(tmp_path)
    key = ok(tmp_path, "enrollment-group", "compute-device-key", "sensors", "--registration-id", "s-1", "-o", "tsv").rstrip("\n")
    assert re.fullmatch(r"[A-Za-z0-9+/]{43}=", key)
    assert ok(tmp_path, "keys", "derive", "--group-key", _group_key(tmp_path), "--registration-id", "s-1", "-o", "tsv") == key + "\n"
    script = 'KEY=$(dpsctl enrollment-group compute-device-key sensors --registration-id s-2 -o tsv) && dpsctl provision --registration-id s-2 --symmetric-key "$KEY" -o none'
    done = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=_env(PATH=f"{BIN.parent}{os.pathsep}{os.environ['PATH']}"), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout == "", done


def _group_key(folder: Path) -> str:
    return ok(folder, "enrollment-group", "show", "sensors", "--show-keys", "-o", "tsv", "--query", "attestation.symmetricKey.primaryKey").strip()


def test_a_key_captured_from_json_output_is_refused_for_its_quotes(tmp_path):
    _group_with_device(tmp_path)
    quoted = ok(tmp_path, "enrollment-group", "compute-device-key", "sensors", "--registration-id", "s-1", DPSCTL_OUTPUT="json").strip()
    assert quoted.startswith('"')
    done = run(tmp_path, "provision", "--registration-id", "s-1", "--symmetric-key", quoted)
    assert done.returncode == 2
    assert "wrapped in quotes" in done.stderr and "-o tsv" in done.stderr and "keys generate" not in done.stderr


@pytest.mark.parametrize(
    ("key", "says"),
    [("notakey", "not valid Base64 of a key"), ("my-secret-password", "contains '-'"), ("a" * 41, "not valid Base64 of a key"), ("a" * 43, "lost its '=' padding")],
)
def test_keys_check_says_what_is_wrong_with_text_that_is_no_key(tmp_path, key, says):
    _group_with_device(tmp_path)
    done = run(tmp_path, "keys", "check", "--registration-id", "s-1", "--key", key)
    assert done.returncode == 2 and says in done.stdout + done.stderr, done
    assert ("padding" in says) == ("padding" in done.stderr) and "URL-safe" not in done.stderr


def test_a_group_key_used_as_a_device_key_gets_the_command_that_derives_the_right_one(tmp_path):
    _group_with_device(tmp_path)
    done = run(tmp_path, "provision", "--registration-id", "s-1", "--symmetric-key", _group_key(tmp_path))
    assert done.returncode == 5
    assert "hint: use the derived key: dpsctl enrollment-group compute-device-key sensors --registration-id s-1 -o tsv" in done.stderr


def test_query_applies_before_any_format(tmp_path):
    _group_with_device(tmp_path)
    for n in (1, 2):
        key = ok(tmp_path, "enrollment-group", "compute-device-key", "sensors", "--registration-id", f"s-{n}", "-o", "tsv").strip()
        ok(tmp_path, "provision", "--registration-id", f"s-{n}", "--symmetric-key", key)
    run(tmp_path, "provision", "--registration-id", "s-3", "--symmetric-key", "A" * 43 + "=")  # refused: a failed record
    query = "[?status=='assigned'].deviceId"
    assert ok(tmp_path, "registration", "list", "--query", query, "-o", "tsv") == "s-1\ns-2\n"
    assert json.loads(ok(tmp_path, "registration", "list", "--query", query, "-o", "json")) == ["s-1", "s-2"]
    assert yaml.safe_load(ok(tmp_path, "registration", "list", "--query", query, "-o", "yaml")) == ["s-1", "s-2"]
    assert ok(tmp_path, "registration", "list", "--query", query) == "s-1\ns-2\n"  # table of bare values
    table = ok(tmp_path, "registration", "list", "--query", "[].{id: registrationId, hub: assignedHub}")
    assert table.splitlines()[0].split() == ["ID", "HUB"]
    rows = ok(tmp_path, "registration", "list", "--query", "[].[registrationId, status]", "-o", "tsv")
    assert rows == "s-1\tassigned\ns-2\tassigned\n"
    bad = run(tmp_path, "registration", "list", "--query", "[?status=='assigned'")
    assert bad.returncode == 2 and "JMESPath" in bad.stderr and bad.stdout == ""


def test_tsv_records_one_line_each_with_values_in_order(tmp_path):
    ok(tmp_path, "hub", "add", "h1", "--location", "westeurope", "--weight", "3")
    line = ok(tmp_path, "hub", "list", "-o", "tsv")
    fields = line.rstrip("\n").split("\t")
    assert line.count("\n") == 1 and {"h1.azure-devices.net", "westeurope", "3"} <= set(fields)
    from dpsctl.cli.render import tsv_value

    assert fields == [tsv_value(v) for v in json.loads(ok(tmp_path, "hub", "list", "-o", "json"))[0].values()]


def test_output_none_prints_nothing_and_keeps_the_exit_code(tmp_path):
    ok(tmp_path, "hub", "add", "h1")
    assert ok(tmp_path, "hub", "list", "-o", "none") == ""
    missing = run(tmp_path, "hub", "show", "nohub", "-o", "none")
    assert missing.returncode == 3 and missing.stdout == "" and missing.stderr.startswith("error: ")


# --------------------------------------------------------------------------- export, import, stats


def test_export_refuses_table_and_import_reads_stdin(tmp_path):
    ok(tmp_path, "hub", "add", "h1")
    refused = run(tmp_path, "export", "-o", "table")
    assert refused.returncode == 2 and "-o yaml" in refused.stderr and "-o json" in refused.stderr and refused.stdout == ""
    document = ok(tmp_path, "export")
    other = tmp_path / "other"
    other.mkdir()
    done = run(other, "import", "-", "-o", "json", input=document)
    assert done.returncode == 0, done
    assert json.loads(done.stdout)["created"]["linkedHubs"] == ["h1.azure-devices.net"]
    assert run(other, "import", "-", input="{not: [valid").returncode == 2


def test_exported_certificates_are_literal_yaml_blocks(tmp_path):
    ok(tmp_path, "cert", "create-root", "root")
    ok(tmp_path, "enrollment-group", "add", "cams", "--attestation", "x509", "--signing-cert", "root.cert.pem")
    document = ok(tmp_path, "export")
    assert "certificate: |" in document
    block = document.split("certificate: |", 1)[1].split("-----END CERTIFICATE-----", 1)[0]
    assert "\n\n" not in block and "-----BEGIN CERTIFICATE-----" in block
    pem = yaml.safe_load(document)["enrollmentGroups"][0]["attestation"]["x509"]["signingCertificates"]["primary"]["certificate"]
    assert pem == (tmp_path / "root.cert.pem").read_text()


def test_stats_json_has_every_total_the_table_shows(tmp_path):
    _group_with_device(tmp_path)
    key = ok(tmp_path, "enrollment-group", "compute-device-key", "sensors", "--registration-id", "s-1", "-o", "tsv").strip()
    ok(tmp_path, "provision", "--registration-id", "s-1", "--symmetric-key", key)
    doc = json.loads(ok(tmp_path, "stats", "-o", "json"))
    table = ok(tmp_path, "stats")
    shown = {" ".join(line.split()[:-1]): int(line.split()[-1]) for line in table.split("\n\n")[0].splitlines()[2:]}
    totals = {"linked hubs": doc["linkedHubs"], "individual enrollments": doc["enrollments"], "enrollment groups": doc["enrollmentGroups"],
              "registrations": doc["registrations"], "devices": doc["devices"], "operations": doc["operations"]}
    totals.update({f"registrations: {s}": n for s, n in doc["registrationsByStatus"].items()})
    assert shown == totals and doc["devices"] == 1


# --------------------------------------------------------------------------- TPM


def test_tpm_create_points_at_the_file_and_enrollment_takes_it(tmp_path):
    done = run(tmp_path, "tpm", "create", "thermostat.tpm", "-o", "json")
    assert done.returncode == 0, done
    created = json.loads(done.stdout)
    assert f"--endorsement-key @thermostat.tpm" in done.stderr and "<endorsementKey" not in done.stderr
    hint = done.stderr.splitlines()[-1].split("enroll it: ", 1)[1]
    done = subprocess.run(["bash", "-c", hint + " -o json"], cwd=tmp_path, env=_env(PATH=f"{BIN.parent}{os.pathsep}{os.environ['PATH']}"), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done
    assert json.loads(done.stdout)["attestation"]["tpm"]["endorsementKey"] == created["endorsementKey"]
    (tmp_path / "ek.txt").write_text(created["endorsementKey"][:100] + "\n" + created["endorsementKey"][100:] + "\n")
    again = run(tmp_path, "enrollment", "add", "other", "--attestation", "tpm", "--endorsement-key", "@ek.txt", "-o", "json")
    assert again.returncode == 0 and json.loads(again.stdout)["attestation"]["tpm"]["endorsementKey"] == created["endorsementKey"], again
    missing = run(tmp_path, "enrollment", "add", "third", "--attestation", "tpm", "--endorsement-key", "@absent.tpm")
    assert missing.returncode == 2 and "absent.tpm" in missing.stderr


# --------------------------------------------------------------------------- tables that fit


def _in_terminal(folder: Path, columns: int, *args: str) -> str:
    """Run dpsctl with stdout on a pseudo-terminal of `columns` columns; the text it drew."""
    import fcntl
    import pty
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
    proc = subprocess.Popen([*DPSCTL, *args], cwd=folder, env=_env(), stdin=subprocess.DEVNULL, stdout=slave, stderr=subprocess.PIPE)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    assert proc.wait(timeout=120) == 0, proc.stderr.read() if proc.stderr else ""
    return b"".join(chunks).decode().replace("\r\n", "\n")


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store with long IDs: six devices of a group with a long name, in a hub with a long name."""
    folder = tmp_path_factory.mktemp("fleet")
    ok(folder, "hub", "add", "factory-westeurope-production-line-7", "--location", "westeurope")
    ok(folder, "enrollment-group", "add", "temperature-sensors-building-42", "--attestation", "symmetricKey")
    for n in range(6):
        rid = f"temperature-sensor-building-42-floor-3-room-{n:04d}"
        key = ok(folder, "enrollment-group", "compute-device-key", "temperature-sensors-building-42", "--registration-id", rid, "-o", "tsv").strip()
        ok(folder, "provision", "--registration-id", rid, "--symmetric-key", key)
    return folder


def _check_fits(text: str, columns: int, rows: int) -> list[str]:
    lines = text.rstrip("\n").split("\n")
    assert all(len(line) <= columns for line in lines), "\n".join(lines)
    assert len(lines) == rows + 2, text  # header, rule, one line per row: no cell wrapped onto another line
    return lines


@pytest.mark.parametrize("columns", [60, 80, 100, 260])
def test_registration_table_fits_the_terminal_without_breaking_an_id(fleet, columns):
    lines = _check_fits(_in_terminal(fleet, columns, "registration", "list"), columns, 6)
    header = lines[0].split("  ")
    assert header[0] == "REGISTRATION ID" and "STATUS" in lines[0]
    if columns >= 260:
        assert "LAST UPDATED" in lines[0] and "…" not in "".join(lines)
        assert "temperature-sensor-building-42-floor-3-room-0005" in lines[-1]
    else:
        assert "LAST UPDATED" not in lines[0]  # a low-value column went first
    if columns <= 80:
        assert "…" in lines[2]  # long values shortened with an ellipsis, whole words otherwise


def test_tables_are_80_columns_when_the_width_is_unknown(fleet):
    for args in (["registration", "list"], ["enrollment-group", "list"], ["hub", "list"], ["device", "list"], ["registration", "history"]):
        out = ok(fleet, *args)
        assert all(len(line) <= 80 for line in out.splitlines()), out
    wide = ok(fleet, "registration", "list", COLUMNS="160")
    assert max(len(line) for line in wide.splitlines()) > 80


def test_show_keys_tables_keep_keys_whole(fleet):
    out = _in_terminal(fleet, 80, "enrollment-group", "show", "temperature-sensors-building-42", "--show-keys")
    key = _group_key_of(fleet)
    assert key in out


def _group_key_of(folder: Path) -> str:
    return ok(folder, "enrollment-group", "show", "temperature-sensors-building-42", "--show-keys", "-o", "tsv", "--query", "attestation.symmetricKey.primaryKey").strip()


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_piped_tables_are_80_columns(fleet):
    done = subprocess.run(["bash", "-c", f"{' '.join(DPSCTL)} registration list | cat"], cwd=fleet, env=_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and max(len(line) for line in done.stdout.splitlines()) <= 80
