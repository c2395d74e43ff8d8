"""Loopback load run of `dpsctl serve`: concurrent HTTPS clients register group devices; every registration is counted.

Plain Python (standard library plus dpsctl). In a temporary folder it makes a store with one symmetric-key
enrollment group and two hubs, starts `dpsctl serve --fast --quiet` on a free port, and runs CLIENTS clients
(threads spread over a few processes, each with its own keep-alive HTTPS connection) that register DEVICES
devices with their derived keys, as the Node HTTP transport does. It then stops the server (SIGTERM, which must
exit 0) and checks the store: every device has an assigned registration record and a hub identity.

    python benchmarks/serve_load.py                      # 50 clients, 5,000 registrations, SQLite store
    python benchmarks/serve_load.py --backend tinydb --devices 1000
    python benchmarks/serve_load.py --json               # the figures as one JSON object
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import multiprocessing
import os
import platform
import re
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ID_SCOPE = "0ne0000B0AD"
GROUP_KEY = base64.b64encode(b"serve-load-benchmark-group-key-0").decode()  # 32 bytes
STORE_NAMES = {"sqlite": "dps.sqlite", "tinydb": "dps.json"}


def dpsctl(store: Path, *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "dpsctl", "--db", str(store), *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"dpsctl {' '.join(args)} failed: {done.stderr}")
    return done.stdout


def start_server(store: Path, log: Path) -> tuple[subprocess.Popen[str], int]:
    with open(log, "w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "dpsctl", "--db", str(store), "serve", "--port", "0", "--fast", "--quiet"],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )
    banner = ""
    for line in proc.stdout:  # type: ignore[union-attr]
        banner += line
        if line.startswith("Stop with"):
            break
    match = re.search(r"listening on https://127\.0\.0\.1:(\d+)", banner)
    if not match:
        proc.kill()
        raise SystemExit(f"dpsctl serve did not start:\n{banner}{log.read_text()}")
    return proc, int(match.group(1))


def _client(port: int, ca: str, ids: list[str], out: list[tuple[str, float, int, int]]) -> None:
    """One client: a keep-alive connection; each device registers until assigned (retrying 429/5xx and resets)."""
    from dpsctl.core.keys import derive_device_key
    from dpsctl.core.sas import build_sas_token, device_resource_uri

    context = ssl.create_default_context(cafile=ca)
    conn = http.client.HTTPSConnection("localhost", port, context=context, timeout=60)
    for registration_id in ids:
        key = derive_device_key(GROUP_KEY, registration_id)
        token = build_sas_token(device_resource_uri(ID_SCOPE, registration_id), key, int(time.time()) + 3600, encode_sr=False)
        body = json.dumps({"registrationId": registration_id})
        headers = {"Authorization": token, "Content-Type": "application/json; charset=utf-8", "Accept": "application/json"}
        retries = 0
        started = time.perf_counter()
        while True:
            try:
                conn.request("PUT", f"/{ID_SCOPE}/registrations/{registration_id}/register?api-version=2019-03-31", body, headers)
                response = conn.getresponse()
                payload = response.read()
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = http.client.HTTPSConnection("localhost", port, context=context, timeout=60)
                retries += 1
                continue
            if response.status == 429 or response.status >= 500:
                retries += 1
                time.sleep(float(response.getheader("Retry-After", "1")))
                continue
            break
        status = json.loads(payload).get("status") if payload else None
        out.append((registration_id, time.perf_counter() - started, response.status if status == "assigned" else -response.status, retries))
    conn.close()


def _process(port: int, ca: str, slices: list[list[str]]) -> list[tuple[str, float, int, int]]:
    """A client process: one thread per client slice."""
    results: list[tuple[str, float, int, int]] = []
    threads = [threading.Thread(target=_client, args=(port, ca, ids, results)) for ids in slices]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=50, help="concurrent clients (default 50)")
    parser.add_argument("--devices", type=int, default=5000, help="registrations in all (default 5,000)")
    parser.add_argument("--processes", type=int, default=max(1, min(4, os.cpu_count() or 1)), help="client processes the clients are spread over")
    parser.add_argument("--backend", choices=sorted(STORE_NAMES), default="sqlite", help="store backend (default sqlite)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="dpsctl-serve-load-") as tmp:
        folder = Path(tmp)
        store = folder / STORE_NAMES[args.backend]
        dpsctl(store, "init", "--id-scope", ID_SCOPE)
        dpsctl(store, "hub", "add", "hub-a")
        dpsctl(store, "hub", "add", "hub-b")
        dpsctl(store, "enrollment-group", "add", "load", "--attestation", "symmetricKey", "--primary-key", GROUP_KEY)
        proc, port = start_server(store, folder / "serve.log")
        ca = str(folder / "dpsctl-serve" / "ca.pem")
        ids = [f"load-{n:06d}" for n in range(args.devices)]
        slices = [ids[i :: args.clients] for i in range(args.clients)]
        groups = [slices[p :: args.processes] for p in range(args.processes)]
        try:
            wall_start = time.perf_counter()
            with multiprocessing.get_context("spawn").Pool(args.processes) as pool:
                parts = pool.starmap(_process, [(port, ca, group) for group in groups])
            wall = time.perf_counter() - wall_start
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.communicate(timeout=60)
        results = [r for part in parts for r in part]
        latencies = [r[1] * 1000 for r in results]
        refused = [r for r in results if r[2] != 200]

        from dpsctl.store import open_store

        with open_store(store).transaction() as tx:
            records = {doc["registrationId"]: doc for doc in tx.scan("registrations")}
            devices = {doc["deviceId"] for doc in tx.scan("devices")}
            per_hub: dict[str, int] = {}
            for doc in tx.scan("devices"):
                per_hub[doc["hub"]] = per_hub.get(doc["hub"], 0) + 1
        assigned = [i for i in ids if records.get(i, {}).get("status") == "assigned"]
        missing = [i for i in ids if i not in devices]
        figures = {
            "backend": args.backend,
            "clients": args.clients,
            "clientProcesses": args.processes,
            "registrations": len(results),
            "seconds": round(wall, 2),
            "throughputPerSecond": round(len(results) / wall, 1),
            "latencyMs": {
                "p50": round(percentile(latencies, 0.50), 1),
                "p99": round(percentile(latencies, 0.99), 1),
                "max": round(max(latencies), 1),
                "mean": round(statistics.fmean(latencies), 1),
            },
            "retries": sum(r[3] for r in results),
            "refused": len(refused),
            "accountedFor": {"assignedRecords": len(assigned), "hubIdentities": len(ids) - len(missing), "perHub": per_hub, "expected": len(ids)},
            "serverExit": proc.returncode,
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
        }
        ok = len(results) == len(ids) and not refused and len(assigned) == len(ids) and not missing and proc.returncode == 0
        if args.json:
            print(json.dumps(figures, indent=2))
        else:
            lat = figures["latencyMs"]
            print(f"dpsctl serve --fast, {args.backend} store, {args.clients} clients over {args.processes} processes, Python {figures['python']}, {figures['cpus']} CPUs")
            print(f"  {len(results)} registrations in {wall:.2f} s: {figures['throughputPerSecond']} registrations/s")
            print(f"  latency p50 {lat['p50']} ms, p99 {lat['p99']} ms, max {lat['max']} ms; retries {figures['retries']}")
            print(f"  accounted for: {len(assigned)}/{len(ids)} assigned records, {len(ids) - len(missing)}/{len(ids)} hub identities {per_hub}")
            print(f"  server stopped with exit code {proc.returncode}")
        if not ok:
            raise SystemExit("FAILED: not every registration is accounted for")


if __name__ == "__main__":
    main()
