"""qiskit-ibm-runtime's saved accounts (`~/.qiskit/qiskit-ibm.json`): reuse the credentials users have.

`QiskitRuntimeService.save_account(channel="ibm_quantum_platform", token=API_KEY, instance=CRN)`
writes `{name: {"channel", "token", "instance", "proxies", "verify", "is_default_account"...}}`.
The default account is chosen as qiskit-ibm-runtime's `AccountManager.get` does: the one marked
`is_default_account`, else `default-ibm-quantum-platform`, else `default-ibm-cloud`. Classic
(`ibm_quantum`) entries are refused: their tokens are not IBM Cloud API keys.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_FILE = Path("~") / ".qiskit" / "qiskit-ibm.json"
NEW_CHANNELS = ("ibm_quantum_platform", "ibm_cloud")
_DEFAULT_NAMES = ("default-ibm-quantum-platform", "default-ibm-cloud")


class AccountError(ValueError):
    """The saved account cannot be used; the message says why and what to do."""


@dataclass(frozen=True)
class SavedAccount:
    name: str
    channel: str
    file: str
    token: str = field(repr=False)
    instance: str | None = None
    #: The https (else http) proxy URL from the account's `proxies.urls`, credentials included.
    proxy: str | None = field(default=None, repr=False)
    verify: bool = True

    @property
    def label(self) -> str:
        return f"saved account {self.name!r} ({self.file})"


def accounts_file() -> Path:
    """QISKIT_IBM_FILENAME, as qiskit-ibm-runtime reads it, else ~/.qiskit/qiskit-ibm.json."""
    return Path(os.environ.get("QISKIT_IBM_FILENAME") or DEFAULT_FILE).expanduser()


def read_accounts(path: Path) -> dict[str, dict[str, Any]]:
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise AccountError(
            f"no saved accounts file at {path}: save one with QiskitRuntimeService.save_account("
            "channel='ibm_quantum_platform', token=API_KEY, instance=CRN), or set QISKIT_IBM_FILENAME"
        ) from None
    except (OSError, ValueError) as exc:
        raise AccountError(f"cannot read the saved accounts file {path}: {type(exc).__name__}") from None
    if not isinstance(doc, dict) or not all(isinstance(v, dict) for v in doc.values()):
        raise AccountError(f"{path} is not a qiskit-ibm-runtime accounts file (expected {{name: account}})")
    return doc


def load_account(name: str | None) -> SavedAccount:
    """The account `name`, or the default one for "" / None."""
    path = accounts_file()
    accounts = read_accounts(path)
    if name:
        if name not in accounts:
            known = ", ".join(sorted(accounts)) or "none"
            raise AccountError(f"no saved account named {name!r} in {path} (saved: {known})")
        chosen = name
    else:
        marked = [n for n, a in accounts.items() if a.get("is_default_account")]
        named = [n for n in _DEFAULT_NAMES if n in accounts]
        usable = [n for n, a in accounts.items() if a.get("channel") in NEW_CHANNELS]
        candidates = marked or named or (usable if len(usable) == 1 else [])
        if not candidates:
            known = ", ".join(sorted(accounts)) or "none"
            raise AccountError(f"no default account in {path}: name one with --qiskit-account NAME (saved: {known})")
        chosen = candidates[0]
    return _parse(chosen, accounts[chosen], str(path))


def _parse(name: str, doc: dict[str, Any], file: str) -> SavedAccount:
    channel = str(doc.get("channel") or "")
    if channel == "ibm_quantum":
        raise AccountError(
            f"saved account {name!r} is channel 'ibm_quantum' (IBM Quantum Platform Classic, retired): its token "
            "is not an IBM Cloud API key and the new API refuses it. Save an account with "
            "channel='ibm_quantum_platform', token=<IBM Cloud API key>, instance=<CRN>"
        )
    if channel not in NEW_CHANNELS:
        raise AccountError(f"saved account {name!r}: unknown channel {channel!r} (expected one of {NEW_CHANNELS})")
    token = doc.get("token")
    if not isinstance(token, str) or not token.strip():
        raise AccountError(f"saved account {name!r} has no token (API key)")
    proxies = doc.get("proxies") or {}
    if proxies.get("username_ntlm"):
        raise AccountError(
            f"saved account {name!r} uses NTLM proxy authentication, which the proxy does not speak: "
            "put basic credentials in the proxy URL (QCP_OUTBOUND_PROXY=http://user:password@host:port)"
        )
    urls = proxies.get("urls") or {}
    proxy = (urls.get("https") or urls.get("http") or urls.get("all")) if isinstance(urls, dict) else None
    instance = doc.get("instance")
    return SavedAccount(
        name=name,
        channel=channel,
        file=file,
        token=token.strip(),
        instance=str(instance).strip() if instance else None,
        proxy=str(proxy) if proxy else None,
        verify=bool(doc.get("verify", True)),
    )
