"""What `serve` and `demo` check before they start anything: the ports they will listen on, the CA.

A problem here is one line and exit 2 (the command cannot run as asked: choose another port or
folder), before any start-up work (IAM, the usage record) that would add unrelated lines.
"""

from __future__ import annotations

from ..config import ConfigError, Settings
from ..serving import listen_error

#: A port that cannot be listened on: like a configuration error, the fix is another setting.
EXIT_LISTEN = 2


def listen_problem(settings: Settings) -> str | None:
    """The first port the proxy would listen on (main, admin, intercept) that it cannot, as one line."""
    for host, port, flag in (
        (settings.host, settings.port, "--port"),
        (settings.admin_host or settings.host, settings.admin_port, "--admin-port"),
        (settings.intercept_host, settings.intercept_port, "--intercept-port"),
    ):
        problem = listen_error(host, port, flag)
        if problem:
            return problem
    return None


def ensure_ca(ca_dir: str | None) -> None:
    """Create (or load) the intercepting mode's CA before serving: a bad QCP_CA_DIR is one clear line."""
    from ..intercept.ca import LocalCA

    try:
        LocalCA(ca_dir)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"QCP_CA_DIR (ca_dir): cannot create or load the local CA: {exc}") from None
