"""Loopback load run of `dpsctl serve`: concurrent clients register group devices; every registration is counted.

Plain Python (standard library plus dpsctl). In a temporary folder it makes a store with one symmetric-key
enrollment group and two hubs, starts `dpsctl serve --fast --quiet` on free ports, and runs CLIENTS clients
(threads spread over a few processes) that register DEVICES devices with their derived keys, once per mode,
in the same run so that the figures compare:

- `https-keepalive`: each client keeps one HTTPS connection for all its devices (the older figure);
- `https`: each device opens its own TLS connection, as a device in the field does;
- `mqtt`: each device opens its own MQTT-over-TLS session (CONNECT, SUBSCRIBE, PUBLISH, answer, DISCONNECT),
  as the Python SDK and the Node MQTT transport do, while HOLD other MQTT sessions stay connected and idle.

It then stops the server (SIGTERM, which must exit 0) and checks the store: every device of every mode has an
assigned registration record and a hub identity.

    python benchmarks/serve_load.py                      # 50 clients, 5,000 registrations a mode, 1,000 held sessions
    python benchmarks/serve_load.py --modes mqtt --hold 2000
    python benchmarks/serve_load.py --backend tinydb --devices 1000 --modes https-keepalive
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
HOST = "127.77.0.1"  # a loopback address of the benchmark's own: MQTT's port is 8883, as the SDKs expect


def dpsctl(store: Path, *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "dpsctl", "--db", str(store), *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"dpsctl {' '.join(args)} failed: {done.stderr}")
    return done.stdout


def start_server(store: Path, log: Path) -> tuple[subprocess.Popen[str], int, int]:
    with open(log, "w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "dpsctl", "--db", str(store), "serve", "--host", HOST, "--port", "0", "--mqtt-port", "8883", "--fast", "--quiet"],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )
    banner = ""
    for line in proc.stdout:  # type: ignore[union-attr]
        banner += line
        if line.startswith("Stop with"):
            break
    match = re.search(r"listening on https://[\d.]+:(\d+)", banner)
    mqtt = re.search(r"mqtts://[\d.]+:(\d+)", banner)
    if not match or not mqtt:
        proc.kill()
        raise SystemExit(f"dpsctl serve did not start:\n{banner}{log.read_text()}")
    return proc, int(match.group(1)), int(mqtt.group(1))


def _client(mode: str, port: int, ca: str, ids: list[str], out: list[tuple[str, float, int, int]]) -> None:
    """One client registering its devices in turn, each until assigned (retrying 429/5xx and resets)."""
    if mode == "mqtt":
        _mqtt_client(port, ca, ids, out)
        return
    from dpsctl.core.keys import derive_device_key
    from dpsctl.core.sas import build_sas_token, device_resource_uri

    context = ssl.create_default_context(cafile=ca)
    conn = http.client.HTTPSConnection(HOST, port, context=context, timeout=60)
    for registration_id in ids:
        if mode == "https":
            conn.close()  # a device of its own: a new connection and TLS handshake
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
                conn = http.client.HTTPSConnection(HOST, port, context=context, timeout=60)
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


def _mqtt_client(port: int, ca: str, ids: list[str], out: list[tuple[str, float, int, int]]) -> None:
    """Devices in turn, each with an MQTT session of its own, as the SDKs register."""
    from dpsctl.core.keys import derive_device_key
    from dpsctl.core.sas import build_sas_token, device_resource_uri
    from tests.server import mqtt_wire as wire

    for registration_id in ids:
        key = derive_device_key(GROUP_KEY, registration_id)
        token = build_sas_token(device_resource_uri(ID_SCOPE, registration_id), key, int(time.time()) + 3600)
        retries = 0
        started = time.perf_counter()
        while True:
            client = None
            try:
                client = wire.RawMqtt(port, Path(ca), HOST, timeout=60)
                client.send(wire.connect(registration_id, wire.username(ID_SCOPE, registration_id), token))
                client.send(wire.subscribe())
                client.send(wire.publish("$dps/registrations/PUT/iotdps-register/?$rid=1", json.dumps({"registrationId": registration_id}).encode()))
                topic, body = client.response()
                client.send(wire.packet(14, 0, b""))
            except (OSError, AssertionError, ValueError):
                retries += 1
                continue
            finally:
                if client is not None:
                    client.close()
            status = int(topic.split("/")[3])
            if status == 429 or status >= 500:
                retries += 1
                time.sleep(1)
                continue
            break
        out.append((registration_id, time.perf_counter() - started, status if body.get("status") == "assigned" else -status, retries))


def _hold_sessions(port: int, ca: str, count: int, ready: threading.Event, stop: threading.Event, held: list[int]) -> None:
    """COUNT MQTT sessions connected, subscribed and idle until told to stop (keep-alive 0: the server's idle limit)."""
    from tests.server import mqtt_wire as wire

    sessions = []
    try:
        for n in range(count):
            registration_id = f"idle-{n:05d}"
            client = wire.RawMqtt(port, Path(ca), HOST, timeout=60)
            client.send(wire.connect(registration_id, wire.username(ID_SCOPE, registration_id), None, keep_alive=0))
            client.send(wire.subscribe())
            assert client.read_packet() is not None and client.read_packet() is not None  # CONNACK, SUBACK
            sessions.append(client)
        held.append(len(sessions))
        ready.set()
        stop.wait()
        held.append(sum(1 for client in sessions if _still_open(client)))
    finally:
        ready.set()
        for client in sessions:
            client.close()


def _still_open(client: object) -> bool:
    from tests.server import mqtt_wire as wire

    assert isinstance(client, wire.RawMqtt)
    try:
        client.send(wire.packet(12, 0, b""))  # PINGREQ
        return client.read_packet() == (13, 0, b"")
    except OSError:
        return False


def _process(mode: str, port: int, ca: str, slices: list[list[str]]) -> list[tuple[str, float, int, int]]:
    """A client process: one thread per client slice."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the raw MQTT client of the tests
    results: list[tuple[str, float, int, int]] = []
    threads = [threading.Thread(target=_client, args=(mode, port, ca, ids, results)) for ids in slices]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def _run_mode(mode: str, port: int, mqtt_port: int, ca: str, ids: list[str], clients: int, processes: int) -> dict:
    slices = [ids[i::clients] for i in range(clients)]
    groups = [slices[p::processes] for p in range(processes)]
    target = mqtt_port if mode == "mqtt" else port
    wall_start = time.perf_counter()
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        parts = pool.starmap(_process, [(mode, target, ca, group) for group in groups])
    wall = time.perf_counter() - wall_start
    results = [r for part in parts for r in part]
    latencies = [r[1] * 1000 for r in results]
    return {
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
        "refused": sum(1 for r in results if r[2] != 200),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=50, help="concurrent clients (default 50)")
    parser.add_argument("--devices", type=int, default=5000, help="registrations per mode (default 5,000)")
    parser.add_argument("--processes", type=int, default=max(1, min(4, os.cpu_count() or 1)), help="client processes the clients are spread over")
    parser.add_argument("--backend", choices=sorted(STORE_NAMES), default="sqlite", help="store backend (default sqlite)")
    parser.add_argument("--modes", default="https-keepalive,https,mqtt", help="comma-separated: https-keepalive, https, mqtt (default all, in that order)")
    parser.add_argument("--hold", type=int, default=1000, help="idle MQTT sessions held open during the run (default 1,000)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not set(modes) <= {"https-keepalive", "https", "mqtt"}:
        raise SystemExit(f"unknown mode in {args.modes!r}")

    with tempfile.TemporaryDirectory(prefix="dpsctl-serve-load-") as tmp:
        folder = Path(tmp)
        store = folder / STORE_NAMES[args.backend]
        dpsctl(store, "init", "--id-scope", ID_SCOPE)
        dpsctl(store, "hub", "add", "hub-a")
        dpsctl(store, "hub", "add", "hub-b")
        dpsctl(store, "enrollment-group", "add", "load", "--attestation", "symmetricKey", "--primary-key", GROUP_KEY)
        proc, port, mqtt_port = start_server(store, folder / "serve.log")
        ca = str(folder / "dpsctl-serve" / "ca.pem")
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        figures: dict = {"backend": args.backend, "clients": args.clients, "clientProcesses": args.processes, "python": platform.python_version(), "cpus": os.cpu_count(), "modes": {}}
        held: list[int] = []
        stop_holding = threading.Event()
        ready = threading.Event()
        holder = threading.Thread(target=_hold_sessions, args=(mqtt_port, ca, args.hold, ready, stop_holding, held), daemon=True)
        all_ids: list[str] = []
        try:
            if args.hold:
                holder.start()
                ready.wait(600)
            for mode in modes:
                ids = [f"{mode}-{n:06d}" for n in range(args.devices)]
                all_ids += ids
                figures["modes"][mode] = _run_mode(mode, port, mqtt_port, ca, ids, args.clients, args.processes)
        finally:
            stop_holding.set()
            if args.hold:
                holder.join(600)
            proc.send_signal(signal.SIGTERM)
            proc.communicate(timeout=60)
        figures["heldSessions"] = {"opened": held[0] if held else 0, "stillOpenAtEnd": held[1] if len(held) > 1 else 0, "wanted": args.hold}

        from dpsctl.store import open_store

        with open_store(store).transaction() as tx:
            records = {doc["registrationId"]: doc for doc in tx.scan("registrations")}
            devices = {doc["deviceId"] for doc in tx.scan("devices")}
        assigned = [i for i in all_ids if records.get(i, {}).get("status") == "assigned"]
        missing = [i for i in all_ids if i not in devices]
        figures["accountedFor"] = {"assignedRecords": len(assigned), "hubIdentities": len(all_ids) - len(missing), "expected": len(all_ids)}
        figures["serverExit"] = proc.returncode
        if "mqtt" in figures["modes"] and "https" in figures["modes"]:
            figures["mqttOverHttps"] = round(figures["modes"]["mqtt"]["throughputPerSecond"] / figures["modes"]["https"]["throughputPerSecond"], 2)
        ok = (
            all(m["refused"] == 0 and m["registrations"] == args.devices for m in figures["modes"].values())
            and len(assigned) == len(all_ids)
            and not missing
            and proc.returncode == 0
            and figures["heldSessions"]["stillOpenAtEnd"] == args.hold
        )
        if args.json:
            print(json.dumps(figures, indent=2))
        else:
            print(f"dpsctl serve --fast, {args.backend} store, {args.clients} clients over {args.processes} processes, Python {figures['python']}, {figures['cpus']} CPUs")
            for mode, m in figures["modes"].items():
                lat = m["latencyMs"]
                print(f"  {mode:16} {m['registrations']} registrations in {m['seconds']:.2f} s: {m['throughputPerSecond']} /s; p50 {lat['p50']} ms, p99 {lat['p99']} ms, max {lat['max']} ms; retries {m['retries']}")
            if "mqttOverHttps" in figures:
                print(f"  MQTT / HTTPS (a connection per device, same run): {figures['mqttOverHttps']}")
            h = figures["heldSessions"]
            print(f"  idle MQTT sessions held: {h['opened']} opened, {h['stillOpenAtEnd']} still open at the end")
            print(f"  accounted for: {len(assigned)}/{len(all_ids)} assigned records, {len(all_ids) - len(missing)}/{len(all_ids)} hub identities")
            print(f"  server stopped with exit code {proc.returncode}")
        if not ok:
            raise SystemExit("FAILED: not every registration is accounted for")


if __name__ == "__main__":
    main()
