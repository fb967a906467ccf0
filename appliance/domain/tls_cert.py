"""The admin web UI's TLS certificate: made (self-signed) at first start, shown by
its SHA-256 fingerprint (console, `nixie status`, the setup wizard), replaceable
by the admin's own.

Where it lives: `web.tls_cert_file` / `web.tls_key_file` when the config names
them (the admin manages those files), else `state_dir/tls/cert.pem` and
`state_dir/tls/key.pem` (the key 0600 in a 0700 directory), which `nixie admin
cert install` replaces. The web server reloads a changed pair for new connections.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import logging
import os
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from appliance.config.schema import Config
from appliance.errors import InvalidInput
from netservices.listen import parse_listen

log = logging.getLogger(__name__)

VALID_DAYS = 3650  # a self-signed certificate is trusted by its fingerprint, not by its age
ORGANISATION = "Nixie Router"


@dataclass(frozen=True)
class CertPaths:
    cert: Path
    key: Path
    managed: bool  # True: state_dir/tls, which this module writes; False: the config's files


@dataclass(frozen=True)
class CertInfo:
    """What an admin compares before trusting the certificate."""

    path: str
    fingerprint: str  # SHA-256 of the DER certificate, "AB:CD:..."
    subject: str
    not_after: str  # ISO 8601, UTC
    self_signed: bool

    def to_dict(self) -> dict:
        return {"path": self.path, "sha256": self.fingerprint, "subject": self.subject,
                "not_after": self.not_after, "self_signed": self.self_signed}


def cert_paths(cfg: Config) -> CertPaths:
    web = cfg.web
    if web.tls_cert_file or web.tls_key_file:
        return CertPaths(Path(web.tls_cert_file), Path(web.tls_key_file), managed=False)
    d = Path(cfg.state_dir) / "tls"
    return CertPaths(d / "cert.pem", d / "key.pem", managed=True)


def fingerprint(cert: x509.Certificate) -> str:
    return fingerprint_of_der(cert.public_bytes(serialization.Encoding.DER))


def fingerprint_of_der(der: bytes) -> str:
    digest = hashlib.sha256(der).hexdigest().upper()
    return ":".join(digest[i:i + 2] for i in range(0, len(digest), 2))


def _load_cert(path: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificates(path.read_bytes())[0]
    except OSError as e:
        raise InvalidInput(f"cannot read the certificate {path}: {e.strerror}") from None
    except ValueError:
        raise InvalidInput(f"{path} is not a PEM certificate") from None


def info(cfg: Config) -> CertInfo | None:
    """The certificate the web UI serves; None when there is none yet (serve has
    not started with web.tls) or it cannot be read."""
    path = cert_paths(cfg).cert
    try:
        cert = _load_cert(path)
    except InvalidInput:
        return None
    return _info(path, cert)


def _info(path: Path, cert: x509.Certificate) -> CertInfo:
    return CertInfo(path=str(path), fingerprint=fingerprint(cert),
                    subject=cert.subject.rfc4514_string(),
                    not_after=cert.not_valid_after_utc.isoformat(),
                    self_signed=cert.issuer == cert.subject)


def ensure(cfg: Config, listen: list[str] | None = None) -> CertInfo:
    """The certificate to serve, made (self-signed) when the managed pair does not
    exist yet, for the names `_names` lists (`listen`: the addresses the web UI binds,
    by default web.listen); made again when the router's own self-signed certificate
    (`made_here`) lacks one of those addresses, the old pair kept as `cert.pem.old`
    and `key.pem.old`. An installed certificate is never replaced. Raises
    InvalidInput when the config's files are missing or bad."""
    paths = cert_paths(cfg)
    names = _names(cfg, listen)
    if paths.managed and not (paths.cert.exists() and paths.key.exists()):
        key, cert = self_signed(names)
        _write_pair(paths, cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))
        return _info(paths.cert, cert)
    cert = _load_cert(paths.cert)
    key_pem = _check_key(paths.key, cert)
    missing = _missing_addresses(cert, names)
    if paths.managed and made_here(cert) and missing:
        # the router's own certificate, made before the web UI listened on these
        # addresses (e.g. IPv6 turned on): made again, the old pair kept as .old
        _write_atomic(_old(paths.cert), paths.cert.read_bytes(), 0o644)
        _write_atomic(_old(paths.key), key_pem, 0o600)
        key, new = self_signed(names)
        _write_pair(paths, new.public_bytes(serialization.Encoding.PEM), _key_pem(key))
        log.warning("the web UI's self-signed certificate lacked addresses it listens on: "
                    "made a new one (compare its fingerprint again)",
                    extra={"missing": " ".join(missing), "old_sha256": fingerprint(cert),
                           "sha256": fingerprint(new), "old": str(_old(paths.cert))})
        return _info(paths.cert, new)
    return _info(paths.cert, cert)


def made_here(cert: x509.Certificate) -> bool:
    """The router's own self-signed certificate (`self_signed`'s), never one the admin
    installed: self-issued, organisation ORGANISATION."""
    org = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    return cert.issuer == cert.subject and [a.value for a in org] == [ORGANISATION]


def _missing_addresses(cert: x509.Certificate, names: list[str]) -> list[str]:
    """The IP addresses among `names` the certificate does not name."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        have = {str(a) for a in san.get_values_for_type(x509.IPAddress)}
    except x509.ExtensionNotFound:
        have = set()
    out = []
    for n in names:
        try:
            addr = ipaddress.ip_address(n)
        except ValueError:
            continue
        if str(addr) not in have:
            out.append(str(addr))
    return out


def _old(path: Path) -> Path:
    return path.with_name(path.name + ".old")


def previous(cfg: Config) -> CertInfo | None:
    """The router's previous self-signed certificate (`cert.pem.old`), kept when a new
    one was made for new addresses; None when there is none or the certificate in use
    is not the router's own."""
    paths = cert_paths(cfg)
    if not paths.managed:
        return None
    try:
        current, old = _load_cert(paths.cert), _load_cert(_old(paths.cert))
    except InvalidInput:
        return None
    return _info(_old(paths.cert), old) if made_here(current) else None


def install(cfg: Config, cert_file: str | os.PathLike, key_file: str | os.PathLike) -> CertInfo:
    """Replace the managed pair with the admin's (PEM; the chain may follow the
    certificate). The web server takes it for new connections within a second."""
    paths = cert_paths(cfg)
    if not paths.managed:
        raise InvalidInput(f"web.tls_cert_file is set ({paths.cert}): replace that file instead")
    cert = _load_cert(Path(cert_file))
    key_pem = _check_key(Path(key_file), cert)
    _write_pair(paths, Path(cert_file).read_bytes(), key_pem)
    return _info(paths.cert, cert)


def _check_key(path: Path, cert: x509.Certificate) -> bytes:
    """The key file's bytes, if it holds the private key of `cert`."""
    try:
        pem = path.read_bytes()
    except OSError as e:
        raise InvalidInput(f"cannot read the key {path}: {e.strerror}") from None
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError):
        raise InvalidInput(f"{path} is not an unencrypted PEM private key") from None
    pub = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    if key.public_key().public_bytes(der, pub) != cert.public_key().public_bytes(der, pub):
        raise InvalidInput(f"the key {path} does not belong to the certificate")
    return pem


def _key_pem(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _write_pair(paths: CertPaths, cert_pem: bytes, key_pem: bytes) -> None:
    """Key first, then certificate, each written whole (temp file, fsync, rename):
    a reader never sees half a file, and the pair is new once the cert is."""
    if not paths.cert.parent.exists():
        paths.cert.parent.mkdir(mode=0o700, parents=True)
        state = paths.cert.parent.parent.stat()  # owned like state_dir
        if os.geteuid() == 0:
            os.chown(paths.cert.parent, state.st_uid, state.st_gid)
    os.chmod(paths.cert.parent, 0o700)
    _write_atomic(paths.key, key_pem, 0o600)
    _write_atomic(paths.cert, cert_pem, 0o644)


def _write_atomic(path: Path, data: bytes, mode: int) -> None:
    """The file whole or not at all, owned like its directory (root installing a
    certificate for serve, which runs as its own user on NixOS)."""
    owner = path.parent.stat()
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        if os.geteuid() == 0:
            os.fchown(fd, owner.st_uid, owner.st_gid)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def _names(cfg: Config, listen: list[str] | None = None) -> list[str]:
    """Names and addresses the admin may type: the host name, its LAN name, the
    LAN address and every address of `listen` (by default web.listen; in serve also
    the LAN's IPv6 address when the web UI listens there) that is not a wildcard."""
    host = socket.gethostname() or "nixie"
    names = [host, f"{host}.{cfg.lan.domain}", cfg.lan_ip]
    for where in cfg.web.listen if listen is None else listen:
        _, addr, _ = parse_listen(where)
        if addr not in ("0.0.0.0", "::", ""):
            names.append(addr)
    return list(dict.fromkeys(names))


def self_signed(names: list[str]) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A P-256 key and a self-signed server certificate for `names` (DNS names or
    IP addresses; the first is the common name)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0][:64]),
                         x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANISATION)])
    alt: list[x509.GeneralName] = []
    for n in names:
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(n)))
        except ValueError:
            alt.append(x509.DNSName(n))
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder()
            .subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
            .add_extension(x509.SubjectAlternativeName(alt), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=False,
                                         content_commitment=False, data_encipherment=False,
                                         key_agreement=False, key_cert_sign=False,
                                         crl_sign=False, encipher_only=False,
                                         decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    return key, cert


def web_summary(cfg: Config, listen: list[str] | None = None) -> dict:
    """Where the admin UI is (a URL per address of `listen`, the addresses it listens
    on: the runtime's `web_listen_now`; by default web.listen), and the certificate an
    admin compares before trusting it (`nixie status`, serve's start-up lines)."""
    scheme = "https" if cfg.web.tls else "http"
    urls = []
    for listen_on in cfg.web.listen if listen is None else listen:
        _, host, port = parse_listen(listen_on)
        if host in ("0.0.0.0", "::"):
            host = cfg.lan_ip
        urls.append(f"{scheme}://{f'[{host}]' if ':' in host else host}:{port}/")
    cert = info(cfg) if cfg.web.tls else None
    old = previous(cfg) if cert else None
    return {"tls": cfg.web.tls, "urls": urls, "certificate": cert.to_dict() if cert else None,
            "previous_certificate": old.to_dict() if old else None}
