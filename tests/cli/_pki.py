"""Helpers shared by the PKI, CA and key tests: a test PKI made with dpsctl, and the openssl command line as a referee."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509


@dataclass(frozen=True)
class Pki:
    """A root, an intermediate below it, and a device below that, made by `dpsctl cert`."""

    dir: Path
    device: str = "dev-01"

    def path(self, name: str, part: str = "cert") -> str:
        """NAME.cert.pem, NAME.key.pem or NAME.fullchain.pem in the PKI directory."""
        return str(self.dir / f"{name}.{part}.pem")


def make_pki(dps, out: Path, *, device: str = "dev-01") -> Pki:  # noqa: ANN001 - the conftest Dps runner
    """Create root, intermediate and device certificates with the CLI, as a user would."""
    dps.ok("cert", "create-root", "root", "--out", str(out))
    dps.ok("cert", "create-intermediate", "inter", "--ca", str(out / "root.cert.pem"), "--ca-key", str(out / "root.key.pem"), "--out", str(out))
    dps.ok("cert", "create-device", device, "--ca", str(out / "inter.fullchain.pem"), "--ca-key", str(out / "inter.key.pem"), "--out", str(out))
    return Pki(out, device)


def need_openssl() -> str:
    """The openssl binary, or skip: it is the independent referee of these tests."""
    path = shutil.which("openssl")
    if path is None:
        pytest.skip("the openssl command line is not installed")
    return path


def openssl(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run openssl and insist on success."""
    run = subprocess.run([need_openssl(), *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, f"openssl {' '.join(args)} failed:\n{run.stdout}\n{run.stderr}"
    return run


def openssl_root(cwd: Path, name: str, cn: str) -> None:
    """A self-signed EC root made by plain `openssl req -x509` (its default config adds CA:TRUE and key identifiers)."""
    openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-subj", f"/CN={cn}", "-days", "365",
        "-keyout", f"{name}.key", "-out", f"{name}.pem",
        cwd=cwd,
    )


def openssl_signed(cwd: Path, name: str, cn: str, ca: str, *, extensions: str | None = None) -> None:
    """A certificate for a fresh EC key, requested with `openssl req` and signed by CA with `openssl x509 -req`."""
    openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-subj", f"/CN={cn}", "-keyout", f"{name}.key", "-out", f"{name}.csr", cwd=cwd)
    args = ["x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key", "-CAcreateserial", "-days", "365", "-out", f"{name}.pem"]
    if extensions is not None:
        (cwd / f"{name}.ext").write_text(extensions)
        args += ["-extfile", f"{name}.ext"]
    openssl(*args, cwd=cwd)


def load(path: str | Path) -> list[x509.Certificate]:
    """Every certificate in a PEM file, in order."""
    return x509.load_pem_x509_certificates(Path(path).read_bytes())
