"""A throwaway PostgreSQL server for the tests and benchmarks: initdb in a temporary folder, a unix socket only.

Used by the `postgres_url` fixture (tests/conftest.py) when no DPSCTL_TEST_POSTGRES_URL is given, and by
.ci/run and benchmarks/run.py from the command line:

    python tests/postgres_server.py start FOLDER   # prints the URL; the server runs until `stop`
    python tests/postgres_server.py stop FOLDER

PostgreSQL refuses to run as root: as root, the server runs as the unprivileged user `nobody` (runuser).
Standard library only.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

DATABASE = "postgres"  # the one initdb makes; each test gets a schema of its own in it
SUPERUSER = "dpsctl"
PORT = 5432  # only names the socket file (no TCP listener)
RUN_AS = "nobody"


def binaries() -> Path | None:
    """The folder holding initdb and pg_ctl: PATH first, then Debian's /usr/lib/postgresql/<version>/bin."""
    initdb = shutil.which("initdb")
    if initdb and shutil.which("pg_ctl"):
        return Path(os.path.realpath(initdb)).parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0)
    for candidate in ["/usr/local/pgsql/bin/initdb", *reversed(versions)]:
        if os.access(candidate, os.X_OK) and os.access(Path(candidate).with_name("pg_ctl"), os.X_OK):
            return Path(candidate).parent
    return None


@dataclass
class Server:
    """A running throwaway server."""

    folder: Path
    url: str

    def stop(self) -> None:
        """Stop the server (immediately: it holds nothing worth keeping) and remove its folder."""
        stop(self.folder)


def _as_server_user(argv: list[str]) -> list[str]:
    return ["runuser", "-u", RUN_AS, "--", *argv] if os.geteuid() == 0 else argv


def url_of(folder: Path) -> str:
    """The URL of the server in `folder` (a unix socket in the folder itself)."""
    return f"postgresql://{SUPERUSER}@/{DATABASE}?host={folder / 'run'}&port={PORT}"


def start(folder: Path | None = None, *, durable: bool = False) -> Server:
    """initdb and start a server in `folder` (a new temporary one by default); raises RuntimeError if it cannot.

    Not durable by default (fsync off: a test server holds nothing worth keeping). The benchmarks ask for
    `durable`, PostgreSQL's defaults, so that commits cost what they cost on a real server.
    """
    bin_dir = binaries()
    if bin_dir is None:
        raise RuntimeError("no PostgreSQL server binaries (initdb, pg_ctl) on PATH or in /usr/lib/postgresql/*/bin")
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        raise RuntimeError("running as root, and runuser (to start PostgreSQL as an unprivileged user) is missing")
    folder = Path(folder) if folder else Path(tempfile.mkdtemp(prefix="dpsctl-pg-"))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "run").mkdir(exist_ok=True)
    if os.geteuid() == 0:
        for path in (folder, folder / "run"):
            shutil.chown(path, RUN_AS)
    data = folder / "data"
    log = folder / "server.log"
    settings = {
        "listen_addresses": "''",
        "unix_socket_directories": f"'{folder / 'run'}'",
        "port": str(PORT),
        "max_connections": "300",
        "unix_socket_permissions": "0700",  # trust authentication: only this user (and root) may connect
        "shared_buffers": "128MB",
    }
    if not durable:
        settings.update({"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"})
    options = " ".join(f"-c {name}={value}" for name, value in settings.items())
    steps = [
        [str(bin_dir / "initdb"), "-D", str(data), "-U", SUPERUSER, "--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync"],
        [str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", options, "-w", "-t", "60", "start"],
    ]
    for argv in steps:
        done = subprocess.run(_as_server_user(argv), capture_output=True, text=True, cwd=folder)
        if done.returncode != 0:
            detail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["?"]
            server_log = log.read_text(errors="replace").strip().splitlines()[-3:] if log.exists() else []
            stop(folder)
            raise RuntimeError(f"{Path(argv[0]).name} failed: {detail[0]} {' | '.join(server_log)}")
    return Server(folder, url_of(folder))


def stop(folder: Path) -> None:
    """Stop the server in `folder` (if running) and remove the folder."""
    bin_dir = binaries()
    data = folder / "data"
    if bin_dir is not None and (data / "postmaster.pid").exists():
        subprocess.run(_as_server_user([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"]), capture_output=True, cwd=folder)
    shutil.rmtree(folder, ignore_errors=True)


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("start", "stop"):
        print("usage: postgres_server.py start|stop FOLDER", file=sys.stderr)
        return 2
    folder = Path(argv[1]).resolve()
    if argv[0] == "stop":
        stop(folder)
        return 0
    try:
        server = start(folder, durable=os.environ.get("DPSCTL_PG_DURABLE") == "1")
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(server.url)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
