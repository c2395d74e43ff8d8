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
    python benchmarks/serve_load.py --modes https,mqtt --rounds 4   # HTTPS and MQTT alternating: A B B A A B B A
    python benchmarks/serve_load.py --backend postgresql --instances 1,2,3 --modes https --hold 0
                                                         # 1, 2 and 3 instances sharing one PostgreSQL store

With several instances, each listens on a loopback address of its own (127.77.0.N), with its own development
CA (a store URL has no folder to share one in), and the clients spread their devices over them round-robin.
With `--backend postgresql` the store is a schema of a throwaway PostgreSQL server (tests/postgres_server.py;
its initdb and pg_ctl must be installed), or of `--postgres URL`.
"""

from __future__ import annotations

import argparse
import dataclasses
import base64
import http.client
import http.server
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
CUSTOM_KEY = base64.b64encode(b"serve-load-custom-allocation-key").decode()  # 32 bytes: the webhook group's


def group_key_of(registration_id: str) -> str:
    """Devices named `custom-...` belong to the webhook-allocated group, the others to the hashed one."""
    return CUSTOM_KEY if registration_id.startswith("custom-") else GROUP_KEY
STORE_NAMES = {"sqlite": "dps.sqlite", "tinydb": "dps.json", "postgresql": ""}
HOST = "127.77.0.1"  # a loopback address of the benchmark's own: MQTT's port is 8883, as the SDKs expect


def host_of(instance: int) -> str:
    """The loopback address of instance `instance` (0-based)."""
    return f"127.77.0.{instance + 1}"


def dpsctl(store: Path | str, *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "dpsctl", "--db", str(store), *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"dpsctl {' '.join(args)} failed: {done.stderr}")
    return done.stdout


def start_server(store: Path | str, log: Path, host: str = HOST) -> tuple[subprocess.Popen[str], int, int]:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "dpsctl", "--db", str(store), "serve", "--host", host, "--port", "0", "--mqtt-port", "8883", "--fast", "--quiet"],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            cwd=log.parent,
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


def _client(mode: str, target: tuple[str, int, str], ids: list[str], out: list[tuple[str, float, int, int, float]]) -> None:
    """One client registering its devices in turn, each until assigned (retrying 429/5xx and resets)."""
    host, port, ca = target
    if mode == "mqtt":
        _mqtt_client(host, port, ca, ids, out)
        return
    from dpsctl.core.keys import derive_device_key
    from dpsctl.core.sas import build_sas_token, device_resource_uri

    context = ssl.create_default_context(cafile=ca)
    conn = http.client.HTTPSConnection(host, port, context=context, timeout=60)
    for registration_id in ids:
        if mode == "https":
            conn.close()  # a device of its own: a new connection and TLS handshake
        key = derive_device_key(group_key_of(registration_id), registration_id)
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
                conn = http.client.HTTPSConnection(host, port, context=context, timeout=60)
                retries += 1
                continue
            if response.status == 429 or response.status >= 500:
                retries += 1
                time.sleep(float(response.getheader("Retry-After", "1")))
                continue
            break
        status = json.loads(payload).get("status") if payload else None
        out.append((registration_id, time.perf_counter() - started, response.status if status == "assigned" else -response.status, retries, time.time()))
    conn.close()


def _mqtt_client(host: str, port: int, ca: str, ids: list[str], out: list[tuple[str, float, int, int, float]]) -> None:
    """Devices in turn, each with an MQTT session of its own, as the SDKs register."""
    from dpsctl.core.keys import derive_device_key
    from dpsctl.core.sas import build_sas_token, device_resource_uri
    from tests.helpers import mqtt_wire as wire

    context = ssl.create_default_context(cafile=ca)  # once per client, as the HTTPS clients do
    for registration_id in ids:
        key = derive_device_key(GROUP_KEY, registration_id)
        token = build_sas_token(device_resource_uri(ID_SCOPE, registration_id), key, int(time.time()) + 3600)
        retries = 0
        started = time.perf_counter()
        while True:
            client = None
            try:
                client = wire.RawMqtt(port, Path(ca), host, timeout=60, context=context)
                # CONNECT, SUBSCRIBE and PUBLISH in one write, as MQTT 3.1.1 §3.1.4 lets a client send packets before
                # its CONNACK (http.client likewise sends a request's head and body in one write).
                client.send(
                    wire.connect(registration_id, wire.username(ID_SCOPE, registration_id), token)
                    + wire.subscribe()
                    + wire.publish("$dps/registrations/PUT/iotdps-register/?$rid=1", json.dumps({"registrationId": registration_id}).encode())
                )
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
        out.append((registration_id, time.perf_counter() - started, status if body.get("status") == "assigned" else -status, retries, time.time()))


def _start_webhook(delay: float) -> http.server.ThreadingHTTPServer:
    """A local custom-allocation webhook that takes `delay` seconds and picks the first linked hub."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            time.sleep(delay)
            data = json.dumps({"iotHubHostName": request["linkedHubs"][0]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _hold_sessions(host: str, port: int, ca: str, count: int, ready: threading.Event, stop: threading.Event, held: list[int]) -> None:
    """COUNT MQTT sessions connected, subscribed and idle until told to stop (keep-alive 0: the server's idle limit)."""
    from tests.helpers import mqtt_wire as wire

    sessions = []
    try:
        for n in range(count):
            registration_id = f"idle-{n:05d}"
            client = wire.RawMqtt(port, Path(ca), host, timeout=60)
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
    from tests.helpers import mqtt_wire as wire

    assert isinstance(client, wire.RawMqtt)
    try:
        client.send(wire.packet(12, 0, b""))  # PINGREQ
        return client.read_packet() == (13, 0, b"")
    except OSError:
        return False


def _process(mode: str, targets: list[tuple[str, int, str]], slices: list[tuple[int, list[str]]]) -> tuple[list[tuple[str, float, int, int, float]], float]:
    """A client process: one thread per client slice, each client talking to the instance its number picks.

    Returns the results and the CPU seconds the clients used (the clients share the machine's CPUs with the server).
    """
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the raw MQTT client of the tests
    results: list[tuple[str, float, int, int, float]] = []
    threads = [threading.Thread(target=_client, args=(mode, targets[n % len(targets)], ids, results)) for n, ids in slices]
    before = os.times()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    after = os.times()
    return results, (after.user - before.user) + (after.system - before.system)


def _cpu_seconds(pid: int) -> float:
    """User and system CPU seconds a process has used so far (Linux /proc), or 0 where there is no /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


@dataclasses.dataclass
class Sample:
    """One batch of registrations of one mode: each device's result, the wall time, and the CPU seconds used."""

    results: list[tuple[str, float, int, int, float]]
    wall: float
    server_cpu: float
    client_cpu: float
    epoch_start: float


def _drive(mode: str, servers: list[dict], ids: list[str], clients: int, processes: int) -> Sample:
    """Register `ids` in `mode` with `clients` concurrent clients; what it took."""
    slices = [(i, ids[i::clients]) for i in range(clients)]
    groups = [slices[p::processes] for p in range(processes)]
    targets = [(s["host"], s["mqtt_port"] if mode == "mqtt" else s["port"], s["ca"]) for s in servers]
    server_cpu = sum(_cpu_seconds(s["pid"]) for s in servers)
    wall_start, epoch_start = time.perf_counter(), time.time()
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        parts = pool.starmap(_process, [(mode, targets, group) for group in groups])
    wall = time.perf_counter() - wall_start
    server_cpu = sum(_cpu_seconds(s["pid"]) for s in servers) - server_cpu
    return Sample([r for part, _ in parts for r in part], wall, server_cpu, sum(cpu for _, cpu in parts), epoch_start)


def _figures(samples: list[Sample]) -> dict:
    """Throughput (registrations over the wall time of all the samples), latency percentiles, CPU per registration."""
    results = [r for sample in samples for r in sample.results]
    wall = sum(sample.wall for sample in samples)
    others = [r for r in results if not r[0].startswith("custom-")]
    if len(others) < len(results):
        # The devices not allocated by the webhook: their throughput up to the last of them (one sample).
        span = max(r[4] for r in others) - samples[0].epoch_start
        custom = [r[1] * 1000 for r in results if r[0].startswith("custom-")]
        extra = {"others": {"registrations": len(others), "throughputPerSecond": round(len(others) / span, 1)}, "customLatencyMsP50": round(percentile(custom, 0.5), 1)}
    else:
        extra = {}
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
        # CPU per registration: the server's (the figure that compares transports) and the benchmark clients'.
        "serverCpuMsPerRegistration": round(sum(s.server_cpu for s in samples) * 1000 / len(results), 2),
        "clientCpuMsPerRegistration": round(sum(s.client_cpu for s in samples) * 1000 / len(results), 2),
        "retries": sum(r[3] for r in results),
        "refused": sum(1 for r in results if r[2] != 200),
        **extra,
    }


def _run_mode(mode: str, servers: list[dict], ids: list[str], clients: int, processes: int) -> dict:
    """The figures of one batch."""
    return _figures([_drive(mode, servers, ids, clients, processes)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=50, help="concurrent clients (default 50)")
    parser.add_argument("--devices", type=int, default=5000, help="registrations per mode (default 5,000)")
    parser.add_argument("--processes", type=int, default=max(1, min(4, os.cpu_count() or 1)), help="client processes the clients are spread over")
    parser.add_argument("--backend", choices=sorted(STORE_NAMES), default="sqlite", help="store backend (default sqlite)")
    parser.add_argument("--postgres", default=os.environ.get("DPSCTL_BENCH_POSTGRES_URL"), help="a PostgreSQL server URL (default: a throwaway server)")
    parser.add_argument("--modes", default="https-keepalive,https,mqtt", help="comma-separated: https-keepalive, https, mqtt (default all, in that order)")
    parser.add_argument("--instances", default="1", help="comma-separated counts of `serve` instances sharing the store, each measured in turn (default 1)")
    parser.add_argument("--hold", type=int, default=1000, help="idle MQTT sessions held open during the run (default 1,000)")
    parser.add_argument("--custom-share", type=float, default=0.0, help="also run https-keepalive with this share of devices allocated by a slow webhook, beside the same run without (issue 12)")
    parser.add_argument("--webhook-ms", type=int, default=200, help="how long the webhook takes to answer (default 200 ms)")
    parser.add_argument("--rounds", type=int, default=1, help="split each mode's devices over this many rounds, the modes' order reversed every other round (default 1)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not set(modes) <= {"https-keepalive", "https", "mqtt"}:
        raise SystemExit(f"unknown mode in {args.modes!r}")
    counts = [int(n) for n in args.instances.split(",")]
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

    with tempfile.TemporaryDirectory(prefix="dpsctl-serve-load-") as tmp:
        folder = Path(tmp)
        pg = None
        if args.backend == "postgresql":
            url = args.postgres
            if url is None:
                from tests.postgres_server import start as start_postgres

                pg = start_postgres()
                url = pg.url
            store: Path | str = f"{url}{'&' if '?' in url else '?'}schema=serve_load"
        else:
            store = folder / STORE_NAMES[args.backend]
        try:
            figures = _measure(args, modes, counts, folder, store)
        finally:
            if pg is not None:
                pg.stop()
        if args.json:
            print(json.dumps(figures, indent=2))
        else:
            print(f"dpsctl serve --fast, {args.backend} store, {args.clients} clients over {args.processes} processes, Python {figures['python']}, {figures['cpus']} CPUs")
            for run in figures["runs"]:
                for mode, m in run["modes"].items():
                    lat = m["latencyMs"]
                    print(f"  {run['instances']} instance(s) {mode:16} {m['registrations']} registrations in {m['seconds']:.2f} s: {m['throughputPerSecond']} /s; p50 {lat['p50']} ms, p99 {lat['p99']} ms, max {lat['max']} ms; retries {m['retries']}; CPU per registration: server {m['serverCpuMsPerRegistration']} ms, clients {m['clientCpuMsPerRegistration']} ms")
                if "mqttOverHttps" in run:
                    print(f"  {run['instances']} instance(s) MQTT / HTTPS (a connection per device, same run): {run['mqttOverHttps']}")
                if "othersKeep" in run:
                    w, wo = run["withWebhook"], run["withoutWebhook"]
                    print(f"  {run['instances']} instance(s) {args.custom_share:.0%} custom ({args.webhook_ms} ms webhook): the others {w['others']['throughputPerSecond']} /s against {wo['throughputPerSecond']} /s without = {run['othersKeep']} (custom p50 {w['customLatencyMsP50']} ms)")
            h = figures["heldSessions"]
            print(f"  idle MQTT sessions held: {h['opened']} opened, {h['stillOpenAtEnd']} still open at the end")
            a = figures["accountedFor"]
            print(f"  accounted for: {a['assignedRecords']}/{a['expected']} assigned records, {a['hubIdentities']}/{a['expected']} hub identities")
            print(f"  servers stopped with exit codes {figures['serverExits']}")
        if not figures["ok"]:
            raise SystemExit("FAILED: not every registration is accounted for")


def _measure(args: argparse.Namespace, modes: list[str], counts: list[int], folder: Path, store: Path | str) -> dict:
    dpsctl(store, "init", "--id-scope", ID_SCOPE)
    dpsctl(store, "hub", "add", "hub-a")
    dpsctl(store, "hub", "add", "hub-b")
    dpsctl(store, "enrollment-group", "add", "load", "--attestation", "symmetricKey", "--primary-key", GROUP_KEY)
    webhook = None
    if args.custom_share:
        webhook = _start_webhook(args.webhook_ms / 1000)
        url = f"http://127.0.0.1:{webhook.server_address[1]}/allocate"
        dpsctl(store, "enrollment-group", "add", "custom", "--attestation", "symmetricKey", "--primary-key", CUSTOM_KEY, "--webhook-url", url)
    figures: dict = {"backend": args.backend, "clients": args.clients, "clientProcesses": args.processes, "python": platform.python_version(), "cpus": os.cpu_count(), "rounds": args.rounds, "runs": []}
    all_ids: list[str] = []
    exits: list[int | None] = []
    held: list[int] = []
    for count in counts:
        servers: list[dict] = []
        procs: list[subprocess.Popen[str]] = []
        stop_holding, ready = threading.Event(), threading.Event()
        holder = None
        try:
            for n in range(count):
                own = folder / f"run{count}-instance{n}"
                proc, port, mqtt_port = start_server(store, own / "serve.log", host_of(n))
                procs.append(proc)
                ca = (Path(store).parent if isinstance(store, Path) else own) / "dpsctl-serve" / "ca.pem"
                servers.append({"host": host_of(n), "port": port, "mqtt_port": mqtt_port, "ca": str(ca), "pid": proc.pid})
            if args.hold and count == counts[0]:
                holder = threading.Thread(target=_hold_sessions, args=(servers[0]["host"], servers[0]["mqtt_port"], servers[0]["ca"], args.hold, ready, stop_holding, held), daemon=True)
                holder.start()
                ready.wait(600)
            run: dict = {"instances": count, "modes": {}}
            # In rounds, the order of the modes reversed every other round (A B, B A, ...): neither mode always
            # meets the larger store or the warmer machine.
            samples: dict[str, list[Sample]] = {mode: [] for mode in modes}
            for r in range(args.rounds):
                for mode in modes if r % 2 == 0 else modes[::-1]:
                    ids = [f"{count}-{mode}-{n:06d}" for n in range(r, args.devices, args.rounds)]
                    all_ids += ids
                    samples[mode].append(_drive(mode, servers, ids, args.clients, args.processes))
            run["modes"] = {mode: _figures(samples[mode]) for mode in modes}
            if "mqtt" in run["modes"] and "https" in run["modes"]:
                run["mqttOverHttps"] = round(run["modes"]["mqtt"]["throughputPerSecond"] / run["modes"]["https"]["throughputPerSecond"], 2)
            if args.custom_share:
                # The same devices count and clients, without and with a share allocated by the slow webhook.
                plain = [f"{count}-plain-{n:06d}" for n in range(args.devices)]
                every = round(1 / args.custom_share)
                # Client i registers ids[i::clients]: one client in `every` has the webhook's devices, as in a fleet
                # where the slow devices are other devices (a client waiting for its own webhook is not "stalled").
                mixed = [f"custom-{count}-{n:06d}" if (n % args.clients) % every == 0 else f"{count}-mixed-{n:06d}" for n in range(args.devices)]
                all_ids += plain + mixed
                run["withoutWebhook"] = _run_mode("https-keepalive", servers, plain, args.clients, args.processes)
                run["withWebhook"] = _run_mode("https-keepalive", servers, mixed, args.clients, args.processes)
                kept = run["withWebhook"]["others"]["throughputPerSecond"] / run["withoutWebhook"]["throughputPerSecond"]
                run["othersKeep"] = round(kept, 2)
            figures["runs"].append(run)
        finally:
            stop_holding.set()
            if holder is not None:
                holder.join(600)
            for proc in procs:
                proc.send_signal(signal.SIGTERM)
                proc.communicate(timeout=60)
                exits.append(proc.returncode)
    if webhook is not None:
        webhook.shutdown()
    figures["heldSessions"] = {"opened": held[0] if held else 0, "stillOpenAtEnd": held[1] if len(held) > 1 else 0, "wanted": args.hold}
    from dpsctl.store import open_store

    with open_store(store) as opened, opened.transaction() as tx:
        records = {doc["registrationId"]: doc for doc in tx.scan("registrations")}
        devices = {doc["deviceId"] for doc in tx.scan("devices")}
    assigned = [i for i in all_ids if records.get(i, {}).get("status") == "assigned"]
    missing = [i for i in all_ids if i not in devices]
    figures["accountedFor"] = {"assignedRecords": len(assigned), "hubIdentities": len(all_ids) - len(missing), "expected": len(all_ids)}
    figures["serverExits"] = exits
    figures["ok"] = (
        all(m["refused"] == 0 and m["registrations"] == args.devices for run in figures["runs"] for m in run["modes"].values())
        and all(run[k]["refused"] == 0 for run in figures["runs"] for k in ("withoutWebhook", "withWebhook") if k in run)
        and len(assigned) == len(all_ids)
        and not missing
        and all(code == 0 for code in exits)
        and figures["heldSessions"]["stillOpenAtEnd"] == args.hold
    )
    return figures


if __name__ == "__main__":
    main()
