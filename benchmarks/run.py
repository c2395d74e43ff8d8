"""dpsctl benchmarks: start-up, single provisioning at scale, imports, batch throughput and memory.

Plain Python (standard library plus dpsctl). Builds what it needs in a temporary folder, runs each figure
several times, and prints median / min / max with the Python version and CPU count.

    python benchmarks/run.py            # the full figures of docs/performance.md (minutes)
    python benchmarks/run.py --quick    # a small version of each, in under a minute
    python benchmarks/run.py --only provision_sqlite,provision_postgresql   # PostgreSQL against SQLite, same run

The PostgreSQL figures use --postgres URL (or DPSCTL_BENCH_POSTGRES_URL), else a throwaway server started
with PostgreSQL's default durability (tests/postgres_server.py; needs initdb and pg_ctl, and psycopg).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

KEY = base64.b64encode(b"benchmark-device-key-0123456789").decode()  # 32 bytes


def dpsctl_command() -> list[str]:
    """The installed console script if there is one (what users run), else `python -m dpsctl`."""
    script = shutil.which("dpsctl", path=str(Path(sys.executable).parent)) or shutil.which("dpsctl")
    return [script] if script else [sys.executable, "-m", "dpsctl"]


def run(args: list[str], *, env: dict[str, str] | None = None) -> tuple[float, subprocess.CompletedProcess[str]]:
    """Wall time of one process, which must succeed."""
    t0 = time.perf_counter()
    done = subprocess.run(args, capture_output=True, text=True, env=env)
    elapsed = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"benchmark step failed ({done.returncode}): {' '.join(args[:6])}...\n{done.stderr[-2000:]}")
    return elapsed, done


def timed(args: list[str], repeat: int) -> list[float]:
    """Wall times of `repeat` runs of a command."""
    return [run(args)[0] for _ in range(repeat)]


def enrollments_document(path: Path, count: int) -> None:
    """An import file of `count` symmetric-key enrollments (streamed, so memory stays flat)."""
    with path.open("w") as out:
        out.write('{"linkedHubs": [{"name": "bench-hub-1", "location": "westeurope"}, {"name": "bench-hub-2", "location": "eastus"}],\n"enrollments": [\n')
        for i in range(count):
            doc = {"registrationId": f"dev-{i:07d}", "attestation": {"type": "symmetricKey", "symmetricKey": {"primaryKey": KEY, "secondaryKey": KEY}}}
            out.write(("," if i else "") + json.dumps(doc) + "\n")
        out.write("]}\n")


def x509_batch(folder: Path, count: int) -> tuple[Path, Path]:
    """A root and an intermediate CA, `count` device certificates (ECDSA P-256), and a CSV batch file."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from dpsctl.core.certs import issue_device, issue_intermediate, issue_root, write_certificates, write_private_key

    root, root_key = issue_root("Bench Root")
    inter, inter_key = issue_intermediate("Bench Intermediate", root, root_key)
    write_certificates(folder / "root.pem", [root])
    rows = ["registrationId,cert,key"]
    for i in range(count):
        rid = f"cam-{i:06d}"
        cert, key = issue_device(rid, inter, inter_key)
        write_certificates(folder / f"{rid}.pem", [cert, inter])  # leaf, intermediate; the root is enrolled
        write_private_key(folder / f"{rid}.key", key)
        rows.append(f"{rid},{folder / (rid + '.pem')},{folder / (rid + '.key')}")
    batch = folder / "x509-batch.csv"
    batch.write_text("\n".join(rows) + "\n")
    return folder / "root.pem", batch


PEAK_RSS_PROBE = (
    "import resource, subprocess, sys; done = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL); "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024); sys.exit(done.returncode)"
)


def peak_rss_mb(args: list[str]) -> tuple[float, float]:
    """(seconds, peak resident set in MB) of one command, measured from a fresh parent of its own."""
    seconds, done = run([sys.executable, "-c", PEAK_RSS_PROBE, *args])
    return seconds, float(done.stdout.strip())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: the whole run in under a minute")
    parser.add_argument("--only", help="comma-separated figure names to run (see the table)")
    parser.add_argument("--postgres", default=os.environ.get("DPSCTL_BENCH_POSTGRES_URL"), help="a PostgreSQL server URL for the postgresql figures (default: a throwaway server)")
    args = parser.parse_args()
    quick = args.quick
    sizes = {
        "tiny_enrollments": 1_000 if quick else 10_000,
        "import_tinydb": 5_000 if quick else 100_000,
        "import_sqlite": 20_000 if quick else 1_000_000,
        "storm": 2_000 if quick else 50_000,
        "x509": 200 if quick else 3_000,
        "memory": 5_000 if quick else 1_000_000,
        "table": 2_000 if quick else 10_000,
    }
    repeat = 3 if quick else 7
    dps = dpsctl_command()
    only = set(args.only.split(",")) if args.only else None
    results: list[tuple[str, str, list[float], str]] = []

    def want(name: str) -> bool:
        return only is None or name in only

    with tempfile.TemporaryDirectory(prefix="dpsctl-bench-") as tmp:
        folder = Path(tmp)

        if want("startup"):
            typer_times = timed([sys.executable, "-c", "import typer"], 10)
            version_times = timed([*dps, "--version"], 10)
            ratio = statistics.median(version_times) / statistics.median(typer_times)
            results.append(("startup", "dpsctl --version (s)", version_times, f"{ratio:.2f} x import typer (target <= 1.3 x; import typer median {statistics.median(typer_times):.3f} s)"))

        def provision_figure(name: str, db: Path | str, count: int, target: str) -> None:
            backend = "postgresql" if isinstance(db, str) else db.suffix[1:]
            doc = folder / f"{name}.json"
            enrollments_document(doc, count)
            seconds, _ = run([*dps, "--db", str(db), "import", str(doc), "-o", "json"])
            doc.unlink()
            one = [*dps, "--db", str(db), "provision", "--registration-id", f"dev-{count // 2:07d}", "--symmetric-key", KEY, "-o", "json"]
            results.append((name, f"one provision, {count:,} enrollments, {backend} (s)", timed(one, repeat), target))
            results.append((f"{name}-import", f"import {count:,} enrollments, {backend} (s)", [seconds], "(set-up of the figure above)"))

        if want("provision_tinydb"):
            provision_figure("provision_tinydb", folder / "p.json", sizes["tiny_enrollments"], "<= 0.300 s median at 10,000")
        if want("import_tinydb"):
            doc = folder / "imp.json"
            enrollments_document(doc, sizes["import_tinydb"])
            times = [run([*dps, "--db", str(folder / f"imp{i}.json"), "import", str(doc), "-o", "json"])[0] for i in range(1 if not quick else 2)]
            results.append(("import_tinydb", f"import {sizes['import_tinydb']:,} enrollments, tinydb (s)", times, "<= 10 s at 100,000"))
        if want("provision_sqlite"):
            provision_figure("provision_sqlite", folder / "p.sqlite", sizes["import_sqlite"], "<= 0.200 s median at 1,000,000; import <= 60 s")

        if want("provision_postgresql"):
            server = None
            url = args.postgres
            if not url:
                sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
                from tests.postgres_server import start

                server = start(durable=True)
                url = server.url
            schema = f"bench_{os.getpid()}"
            try:
                provision_figure("provision_postgresql", f"{url}{'&' if '?' in url else '?'}schema={schema}", sizes["import_sqlite"], "<= 1.5 x sqlite (same run); import <= 2 x")
            finally:
                if server is not None:
                    server.stop()

        if want("storm_sqlite"):
            db = str(folder / "storm.sqlite")
            run([*dps, "--db", db, "hub", "add", "storm-hub-1"])
            run([*dps, "--db", db, "hub", "add", "storm-hub-2", "--weight", "2"])
            run([*dps, "--db", db, "enrollment-group", "add", "storm", "--attestation", "symmetricKey", "--primary-key", KEY])
            rates = []
            for i in range(2 if quick else 3):
                _, done = run([*dps, "--db", db, "provision", "--count", str(sizes["storm"]), "--id-pattern", f"r{i}-sensor-{{n:07d}}", "--group", "storm", "-o", "json"])
                rates.append(json.loads(done.stdout)["devicesPerSecond"])
            results.append(("storm_sqlite", f"batch symmetric-key group, {sizes['storm']:,} devices, sqlite (devices/s)", rates, ">= 5,000 devices/s"))

        if want("x509_sqlite"):
            db = str(folder / "x509.sqlite")
            certs = folder / "certs"
            certs.mkdir()
            root, batch = x509_batch(certs, sizes["x509"])
            run([*dps, "--db", db, "hub", "add", "x509-hub"])
            run([*dps, "--db", db, "enrollment-group", "add", "cameras", "--attestation", "x509", "--signing-cert", str(root)])
            rates = []
            for _ in range(2 if quick else 3):
                run([*dps, "--db", db, "registration", "list", "-o", "json"])
                _, done = run([*dps, "--db", db, "provision", "--batch", str(batch), "-o", "json"])
                rates.append(json.loads(done.stdout)["devicesPerSecond"])
            results.append(("x509_sqlite", f"batch X.509 (P-256, 3-cert chain), {sizes['x509']:,} devices, sqlite (devices/s)", rates, ">= 1,000 devices/s"))

        if want("table_vs_json"):
            # The same command drawn as a table (80 columns, piped) and as JSON, on the same 10,000 records.
            db = str(folder / "table.sqlite")
            run([*dps, "--db", db, "hub", "add", "table-hub-westeurope-production"])
            run([*dps, "--db", db, "enrollment-group", "add", "table", "--attestation", "symmetricKey", "--primary-key", KEY])
            run([*dps, "--db", db, "provision", "--count", str(sizes["table"]), "--id-pattern", "temperature-sensor-{n:07d}", "--group", "table", "-o", "json"])
            as_json = timed([*dps, "--db", db, "registration", "list", "-o", "json"], repeat)
            as_table = timed([*dps, "--db", db, "registration", "list"], repeat)
            ratio = statistics.median(as_table) / statistics.median(as_json)
            results.append(("table_vs_json", f"registration list, {sizes['table']:,} rows, -o json (s)", as_json, "(baseline for the table)"))
            results.append(("table_vs_json", f"registration list, {sizes['table']:,} rows, table (s)", as_table, f"{ratio:.2f} x the JSON time (target < 2 x)"))

        if want("memory"):
            db = str(folder / "mem.sqlite")
            run([*dps, "--db", db, "hub", "add", "mem-hub"])
            run([*dps, "--db", db, "enrollment-group", "add", "mem", "--attestation", "symmetricKey", "--primary-key", KEY])
            seconds, peak = peak_rss_mb([*dps, "--db", db, "provision", "--count", str(sizes["memory"]), "--id-pattern", "m-{n:07d}", "--group", "mem", "-o", "json"])
            results.append(("memory", f"peak RSS, batch of {sizes['memory']:,} devices, sqlite (MB)", [peak], f"<= 200 MB; took {seconds:.1f} s"))

    print(f"dpsctl benchmarks ({'quick' if quick else 'full'}): Python {platform.python_version()}, {os.cpu_count()} CPUs, {platform.machine()}")
    print(f"{'figure':<70} {'median':>10} {'min':>10} {'max':>10}  target / note")
    for _, label, values, note in results:
        print(f"{label:<70} {statistics.median(values):>10.3f} {min(values):>10.3f} {max(values):>10.3f}  {note}")
    medians = {name: statistics.median(values) for name, _, values, _ in results}
    for what, name in (("one provision", "provision"), ("import", "provision-import")):
        pg, lite = medians.get(name.replace("provision", "provision_postgresql")), medians.get(name.replace("provision", "provision_sqlite"))
        if pg is not None and lite is not None:
            print(f"postgresql / sqlite, {what} (same run): {pg:.3f} s / {lite:.3f} s = {pg / lite:.2f} x")


if __name__ == "__main__":
    main()
