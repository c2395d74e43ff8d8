"""The one test PKI: a root, an intermediate below it and devices below that, as PEM files in one folder, made by
the CLI (`make_pki`, as a user would) or in-process (`build_pki`, fast); and the openssl command line as a referee.

Files are NAME.cert.pem, NAME.key.pem and NAME.fullchain.pem (what `dpsctl cert` writes); the root is "root",
the intermediate "inter".
"""

from __future__ import annotations

import itertools
import shutil
import subprocess
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from dpsctl.core.certs import issue_device, issue_intermediate, issue_root, write_certificates, write_private_key

_FILE_NUMBERS = itertools.count()


@dataclass(frozen=True)
class Pki:
    """Certificate files of a root and an intermediate under it (and of the devices made so far) in `folder`."""

    folder: Path

    def path(self, name: str, part: str = "cert") -> str:
        """NAME.cert.pem, NAME.key.pem or NAME.fullchain.pem in the PKI folder."""
        return str(self.folder / f"{name}.{part}.pem")

    @property
    def root_pem(self) -> str:
        return self.path("root")

    @property
    def intermediate_pem(self) -> str:
        return self.path("inter")

    def issuer(self, name: str) -> tuple[x509.Certificate, Any]:
        """(certificate, private key) of NAME, read from its files."""
        cert = x509.load_pem_x509_certificate(Path(self.path(name)).read_bytes())
        return cert, serialization.load_pem_private_key(Path(self.path(name, "key")).read_bytes(), None)

    @cached_property
    def root(self) -> tuple[x509.Certificate, Any]:
        return self.issuer("root")

    @cached_property
    def intermediate(self) -> tuple[x509.Certificate, Any]:
        return self.issuer("inter")

    def device(self, name: str, *, under: str = "intermediate", chain: bool = False, **options: Any) -> tuple[str, str, x509.Certificate]:
        """(cert file, key file, cert) of a new device signed by the intermediate, the root, or itself ('self')."""
        ca_cert, ca_key = {"intermediate": self.intermediate, "root": self.root, "self": (None, None)}[under]
        cert, key = issue_device(name, ca_cert, ca_key, **options)
        certs = [cert, ca_cert] if chain and ca_cert is not None else [cert]
        stem = f"{name}-{next(_FILE_NUMBERS)}"  # the folder may be shared by a whole module
        cert_file, key_file = self.folder / f"{stem}.pem", self.folder / f"{stem}.key"
        write_certificates(cert_file, certs)
        write_private_key(key_file, key)
        return str(cert_file), str(key_file), cert


def make_pki(dps, out: Path, *, device: str = "dev-01") -> Pki:  # noqa: ANN001 - the Dps runner of tests/helpers/cli.py
    """Create root, intermediate and device certificates with the CLI, as a user would."""
    dps.ok("cert", "create-root", "root", "--out", str(out))
    dps.ok("cert", "create-intermediate", "inter", "--ca", str(out / "root.cert.pem"), "--ca-key", str(out / "root.key.pem"), "--out", str(out))
    dps.ok("cert", "create-device", device, "--ca", str(out / "inter.fullchain.pem"), "--ca-key", str(out / "inter.key.pem"), "--out", str(out))
    return Pki(out)


def build_pki(folder: Path, *, root_cn: str = "dpsctl test root", intermediate_cn: str = "dpsctl test intermediate") -> Pki:
    """The same files as make_pki (devices aside), made in-process with dpsctl.core.certs: fast, EC keys."""
    root = issue_root(root_cn)
    inter = issue_intermediate(intermediate_cn, *root)
    for name, (cert, key), chain in (("root", root, [root[0]]), ("inter", inter, [inter[0], root[0]])):
        write_certificates(folder / f"{name}.cert.pem", [cert])
        write_private_key(folder / f"{name}.key.pem", key)
        write_certificates(folder / f"{name}.fullchain.pem", chain)
    return Pki(folder)


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
