"""The local CA: created once with a private key nobody else can read, reused, leaves for one host."""

from __future__ import annotations

import stat
from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from proxy.intercept.ca import CA_YEARS, LocalCA


def test_ca_is_created_once_with_a_private_key_only_the_owner_reads(tmp_path: Path) -> None:
    ca = LocalCA(tmp_path / "state")
    assert stat.S_IMODE(ca.key_path.stat().st_mode) == 0o600
    again = LocalCA(tmp_path / "state")
    assert again.fingerprint() == ca.fingerprint()
    cert = x509.load_pem_x509_certificate(ca.cert_path.read_bytes())
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    years = (cert.not_valid_after_utc - cert.not_valid_before_utc).days / 365
    assert CA_YEARS - 0.1 < years < CA_YEARS + 0.1


def test_two_state_dirs_make_two_different_cas(tmp_path: Path) -> None:
    assert LocalCA(tmp_path / "a").fingerprint() != LocalCA(tmp_path / "b").fingerprint()


def test_leaf_names_only_the_intercepted_host_and_is_signed_by_the_ca(tmp_path: Path) -> None:
    ca = LocalCA(tmp_path)
    chain, _key = ca.leaf_pem("api.quantum-computing.ibm.com")
    leaf, issuer = x509.load_pem_x509_certificates(chain)
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["api.quantum-computing.ibm.com"]
    assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert ExtendedKeyUsageOID.SERVER_AUTH in leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    leaf.verify_directly_issued_by(ca.cert)
    assert issuer == ca.cert
    assert (leaf.not_valid_after_utc - leaf.not_valid_before_utc).days <= 8


def test_tls_contexts_are_cached_per_host(tmp_path: Path) -> None:
    ca = LocalCA(tmp_path)
    assert ca.context_for("auth.quantum.ibm.com") is ca.context_for("auth.quantum.ibm.com")
    assert ca.context_for("auth.quantum.ibm.com") is not ca.context_for("api.quantum.ibm.com")
    assert not list(tmp_path.glob("*leaf*")), "leaves stay in memory"
