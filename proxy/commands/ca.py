"""`ca`: the local CA of intercepting mode: its path (for REQUESTS_CA_BUNDLE) or its fingerprint."""

from __future__ import annotations

import argparse

from ..config import load_settings


def add_arguments(p: argparse.ArgumentParser) -> None:
    what = p.add_mutually_exclusive_group()
    what.add_argument("--path", action="store_true", help="print the CA certificate's path (default)")
    what.add_argument("--show", action="store_true", help="print the fingerprint and how to trust the CA")
    p.add_argument("--ca-dir", help="CA directory (QCP_CA_DIR; default: the proxy's state directory)")
    p.add_argument("--config", metavar="FILE", help="TOML settings file (QCP_CONFIG)")


def cmd_ca(args: argparse.Namespace) -> int:
    """Creates the CA on first use, like `serve` would, so the path can be exported before serving."""
    from ..intercept.ca import LocalCA

    settings = load_settings(args.config, ca_dir=args.ca_dir)
    ca = LocalCA(settings.ca_dir)
    if not args.show:
        print(ca.cert_path)
        return 0
    port = settings.intercept_port or "PORT"
    print(f"CA certificate: {ca.cert_path}")
    print(f"SHA-256 fingerprint: {ca.fingerprint()}")
    print(f"Private key: {ca.key_path} (0600; never leaves this machine)")
    print("Trust it only in the shells that run legacy code (intercepting mode):")
    print(f"  export HTTPS_PROXY=http://{settings.intercept_host}:{port}")
    print(f"  export REQUESTS_CA_BUNDLE={ca.cert_path}")
    return 0
