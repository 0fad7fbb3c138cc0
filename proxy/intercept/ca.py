"""The proxy's local certificate authority, for intercepting mode.

Callers trust it once (`REQUESTS_CA_BUNDLE=$(qiskit-classic-proxy ca --path)`); the proxy then
terminates TLS for the IBM hosts with short-lived leaves it signs itself. The CA key stays in the
CA directory (0600) and never leaves the process; leaves live only in memory.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import ssl
import tempfile
import threading
from pathlib import Path

from cachetools import TTLCache
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

try:
    import fcntl
except ImportError:  # pragma: no cover - not on Windows
    fcntl = None  # type: ignore[assignment]

CA_CERT = "qcp-ca.pem"
CA_KEY = "qcp-ca.key"
CA_YEARS = 10
LEAF_DAYS = 7
#: Leaves are re-minted well before they expire.
LEAF_CACHE_SECONDS = 24 * 3600


def default_ca_dir() -> Path:
    """The proxy's state directory: $XDG_STATE_HOME/qiskit-classic-proxy (~/.local/state/...)."""
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(base) / "qiskit-classic-proxy"


class LocalCA:
    """Loads the CA from `directory`, creating it on first use; mints cached per-host TLS contexts."""

    def __init__(self, directory: str | os.PathLike[str] | None = None) -> None:
        self.dir = Path(directory).expanduser() if directory else default_ca_dir()
        self._lock = threading.Lock()
        self._contexts: TTLCache[str, ssl.SSLContext] = TTLCache(maxsize=256, ttl=LEAF_CACHE_SECONDS)
        self.key, self.cert = self._load_or_create()

    @property
    def cert_path(self) -> Path:
        return self.dir / CA_CERT

    @property
    def key_path(self) -> Path:
        return self.dir / CA_KEY

    def fingerprint(self) -> str:
        """SHA-256 of the CA certificate, as browsers and `openssl x509 -fingerprint` show it."""
        raw = self.cert.fingerprint(hashes.SHA256())
        return ":".join(f"{b:02X}" for b in raw)

    # -- the CA ---------------------------------------------------------------------------------
    def _load_or_create(self) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        # Several workers may start at once: a file lock makes exactly one of them create the CA.
        with self._lock, open(self.dir / ".ca.lock", "a") as lock:
            if fcntl is not None:
                fcntl.flock(lock, fcntl.LOCK_EX)
            if self.cert_path.is_file() and self.key_path.is_file():
                key = serialization.load_pem_private_key(self.key_path.read_bytes(), password=None)
                if not isinstance(key, ec.EllipticCurvePrivateKey):
                    raise ValueError(f"{self.key_path}: not an EC private key")
                return key, x509.load_pem_x509_certificate(self.cert_path.read_bytes())
            key = ec.generate_private_key(ec.SECP256R1())
            cert = _ca_cert(key)
            _write_private(self.key_path, key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            ))
            self.cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
            return key, cert

    # -- leaves ---------------------------------------------------------------------------------
    def context_for(self, host: str) -> ssl.SSLContext:
        """A server-side TLS context whose certificate names only `host`."""
        with self._lock:
            ctx = self._contexts.get(host)
            if ctx is None:
                ctx = self._contexts[host] = self._leaf_context(host)
            return ctx

    def leaf_pem(self, host: str) -> tuple[bytes, bytes]:
        """(certificate chain PEM, key PEM) for `host`, freshly minted."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.timezone.utc)
        try:
            san: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(host))
        except ValueError:
            san = x509.DNSName(host)
        ca_ski = self.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host[:64])]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=LEAF_DAYS))
            .add_extension(x509.SubjectAlternativeName([san]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True, content_commitment=False, key_encipherment=False,
                    data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
                    encipher_only=False, decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        chain = cert.public_bytes(serialization.Encoding.PEM) + self.cert.public_bytes(serialization.Encoding.PEM)
        key_pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        return chain, key_pem

    def _leaf_context(self, host: str) -> ssl.SSLContext:
        chain, key_pem = self.leaf_pem(host)
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.set_alpn_protocols(["http/1.1"])
        # load_cert_chain reads files only: write both to a private temp dir, load, delete.
        with tempfile.TemporaryDirectory(prefix="qcp-leaf-") as tmp:
            cert_file, key_file = Path(tmp) / "leaf.pem", Path(tmp) / "leaf.key"
            cert_file.write_bytes(chain)
            _write_private(key_file, key_pem)
            ctx.load_cert_chain(cert_file, key_file)
        return ctx


def _ca_cert(key: ec.EllipticCurvePrivateKey) -> x509.Certificate:
    now = dt.datetime.now(dt.timezone.utc)
    name = x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "qiskit-classic-proxy"),
        x509.NameAttribute(NameOID.COMMON_NAME, "qiskit-classic-proxy local CA"),
    ])
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=365 * CA_YEARS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )


def _write_private(path: Path, data: bytes) -> None:
    """Create with 0600 from the start (no window where the key is world-readable)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, 0o600)
