"""`dpsctl serve`: the DPS device and service REST APIs over HTTPS, on the same store as the other commands."""

from __future__ import annotations

from typing import Annotated

import typer

from dpsctl.cli.context import STATE
from dpsctl.core.errors import InvalidInput

# The server is imported by the command that runs it: `dpsctl serve --help` stays cheap.


def register(app: typer.Typer) -> None:
    """Add `dpsctl serve` to the root app."""

    @app.command("serve")
    def serve(
        host: Annotated[
            str, typer.Option("--host", help="Address to listen on (0.0.0.0 exposes the emulator to the network).")
        ] = "127.0.0.1",
        port: Annotated[
            int,
            typer.Option(
                "--port",
                help="HTTPS port (device and service REST APIs, MQTT over WebSockets); 0: any free port, printed at start.",
                min=0,
                max=65535,
            ),
        ] = 8443,
        mqtt_port: Annotated[
            int,
            typer.Option(
                "--mqtt-port", help="MQTT-over-TLS port (the Python SDK uses 8883); 0 turns MQTT off.", min=0, max=65535
            ),
        ] = 8883,
        tls_cert: Annotated[
            str | None,
            typer.Option(
                "--tls-cert",
                help="Server certificate PEM (chain); default: a local development CA and certificate made in the store's folder.",
            ),
        ] = None,
        tls_key: Annotated[str | None, typer.Option("--tls-key", help="Private key PEM of --tls-cert.")] = None,
        fast: Annotated[
            bool,
            typer.Option("--fast", help="Answer a registration with 200 at once instead of 202 assigning and a poll."),
        ] = False,
        assigning_delay: Annotated[
            float,
            typer.Option(
                "--assigning-delay",
                help="Seconds a registration stays 'assigning' (polls answer 202 until then).",
                min=0.0,
                max=3600.0,
            ),
        ] = 0.0,
        inject: Annotated[
            list[str] | None,
            typer.Option(
                "--inject",
                help="STATUS:RATE[:RETRY_AFTER]: answer that share of device requests with 429 (or 500/502/503/504) and a Retry-After. Repeatable.",
            ),
        ] = None,
        registrations_per_minute: Annotated[
            int | None,
            typer.Option(
                "--registrations-per-minute",
                help="Registration quota; beyond it devices get 429 with Retry-After (DPS allows 1,000).",
                min=1,
            ),
        ] = None,
        webhook_timeout: Annotated[
            float,
            typer.Option(
                "--webhook-timeout", help="Seconds to wait for a custom allocation webhook or command.", min=0.1
            ),
        ] = 10.0,
        allocation_workers: Annotated[
            int,
            typer.Option(
                "--allocation-workers",
                help="Registrations allocated at once (custom-allocation webhooks run here, not in the request).",
                min=1,
                max=256,
            ),
        ] = 8,
        quiet: Annotated[
            bool,
            typer.Option("--quiet", "-q", help="No log line per request (start, stop and errors are still printed)."),
        ] = False,
    ) -> None:
        """Serve DPS for the official Azure IoT SDK clients: HTTPS, MQTT over TLS, and MQTT over WebSockets.

        Devices register over HTTPS (PUT /{idScope}/registrations/{id}/register) or MQTT (port 8883, or
        wss://host:PORT/$iothub/websocket) with a SAS token, a TLS client certificate, or the TPM challenge
        (HTTPS only, as in DPS); service clients manage enrollments with the connection string printed by
        `dpsctl service connection-string`. Stops cleanly on Ctrl-C or SIGTERM.
        """
        if (tls_cert is None) != (tls_key is None):
            raise InvalidInput(
                "--tls-cert and --tls-key go together", hint="give both, or neither for the local development CA"
            )
        from dpsctl.server.cli import run

        raise typer.Exit(
            run(
                db=STATE.db,
                host=host,
                port=port,
                mqtt_port=mqtt_port,
                tls_cert=tls_cert,
                tls_key=tls_key,
                fast=fast,
                assigning_delay=assigning_delay,
                inject=inject or [],
                registrations_per_minute=registrations_per_minute,
                webhook_timeout=webhook_timeout,
                allocation_workers=allocation_workers,
                quiet=quiet,
            )
        )
