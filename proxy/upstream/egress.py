"""Outbound network: which proxy (if any) and which TLS trust the IAM and new-API connections use.

Corporate networks reach the internet through an HTTP proxy (`HTTPS_PROXY`, or the explicit
`QCP_OUTBOUND_PROXY`), often one that inspects TLS with its own CA (`QCP_CA_BUNDLE`, or the
`SSL_CERT_FILE` / `REQUESTS_CA_BUNDLE` other tools already read). Each upstream client talks to
one origin, so the proxy is chosen once per origin here and handed to its transport: CONNECT
tunnels for https (all three transports), absolute-form requests for plain http.

Proxy credentials live only in `ProxyURL`; its repr, `display` and every error message show
`***` in their place.
"""

from __future__ import annotations

import base64
import ipaddress
import os
import ssl
import urllib.request
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

import httpx

from ..config import ConfigError, Settings


@dataclass(frozen=True)
class ProxyURL:
    """An `http://[user:password@]host:port` forward proxy."""

    host: str
    port: int
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    #: Where the setting came from ("QCP_OUTBOUND_PROXY", "HTTPS_PROXY", a saved account...).
    source: str = ""

    @property
    def authorization(self) -> str | None:
        """The Proxy-Authorization value (Basic), or None without credentials."""
        if self.username is None:
            return None
        raw = f"{self.username}:{self.password or ''}".encode()
        return "Basic " + base64.b64encode(raw).decode("ascii")

    @property
    def hostport(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def display(self) -> str:
        """For logs and `check`: never the credentials."""
        return f"http://{'***@' if self.username is not None else ''}{self.hostport}"

    @property
    def url(self) -> str:
        """Without credentials (aiohttp takes them apart)."""
        return f"http://{self.hostport}"

    def httpx_proxy(self) -> httpx.Proxy:
        auth = (self.username, self.password or "") if self.username is not None else None
        return httpx.Proxy(self.url, auth=auth)

    def __str__(self) -> str:
        return self.display


def parse_proxy(raw: str, source: str = "") -> ProxyURL:
    """`http://[user:pass@]host[:port]` (port defaults to 80); ValueError without echoing the value."""
    value = raw.strip()
    if "://" not in value:
        value = "http://" + value  # HTTPS_PROXY=proxy.corp:3128 is common
    try:
        u = urlsplit(value)
        port = u.port
    except ValueError:
        raise ValueError(f"{source or 'proxy'}: not a URL (expected http://[user:password@]host:port)") from None
    if u.scheme != "http":
        raise ValueError(
            f"{source or 'proxy'}: scheme {u.scheme!r} is not supported: use http://host:port "
            "(the tunnel to the new API is TLS end to end either way)"
        )
    if not u.hostname:
        raise ValueError(f"{source or 'proxy'}: no host (expected http://[user:password@]host:port)")
    username = unquote(u.username) if u.username is not None else None
    password = unquote(u.password) if u.password is not None else None
    return ProxyURL(u.hostname, port or 80, username, password, source)


def _env_proxies() -> dict[str, tuple[str, str]]:
    """scheme -> (value, variable name) from the environment, as curl and requests read it."""
    out: dict[str, tuple[str, str]] = {}
    for scheme, value in urllib.request.getproxies_environment().items():
        name = next((n for n in (f"{scheme}_proxy", f"{scheme.upper()}_PROXY") if os.environ.get(n) == value), "")
        out[scheme] = (value, name or f"{scheme.upper()}_PROXY")
    return out


def proxy_for(settings: Settings, url: str) -> ProxyURL | None:
    """The proxy for connections to `url`, or None for a direct connection.

    QCP_OUTBOUND_PROXY wins; else HTTPS_PROXY / HTTP_PROXY / ALL_PROXY unless proxy_from_env is
    off (and never for loopback hosts). NO_PROXY applies to both (host names, domain suffixes,
    host:port, `*`; no CIDR ranges).
    """
    u = urlsplit(url)
    scheme, host = u.scheme, u.hostname or ""
    env = _env_proxies() if settings.proxy_from_env else {}
    no_proxy = env.get("no", ("", ""))[0]
    if no_proxy and _bypass(host, u.port, no_proxy):
        return None
    if settings.outbound_proxy is not None and settings.outbound_proxy.get_secret_value():
        return parse_proxy(settings.outbound_proxy.get_secret_value(), "QCP_OUTBOUND_PROXY")
    if _is_loopback(host):
        return None  # the emulator, the demo, a local tunnel: never sent to a corporate proxy from env
    hit = env.get(scheme) or env.get("all")
    if hit is None or not hit[0]:
        return None
    try:
        return parse_proxy(hit[0], hit[1])
    except ValueError as exc:
        raise ConfigError(f"{hit[1]} (proxy_from_env): {exc}") from None


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _bypass(host: str, port: int | None, no_proxy: str) -> bool:
    """NO_PROXY matching by urllib's rules (the ones requests uses)."""
    if no_proxy.strip() == "*":
        return True
    target = f"{host}:{port}" if port else host
    return bool(urllib.request.proxy_bypass_environment(target, {"no": no_proxy}))


def ca_bundle(settings: Settings) -> tuple[str | None, str]:
    """(PEM path, the setting it came from): QCP_CA_BUNDLE, then SSL_CERT_FILE, REQUESTS_CA_BUNDLE."""
    if settings.ca_bundle:
        return settings.ca_bundle, "QCP_CA_BUNDLE"
    for name in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE"):
        value = os.environ.get(name)
        if value:
            return value, name
    return None, ""


def ssl_context(settings: Settings) -> ssl.SSLContext:
    """The TLS trust for upstream connections; ConfigError naming the setting if the bundle is bad."""
    path, source = ca_bundle(settings)
    if path is None:
        ctx = httpx.create_ssl_context()  # certifi's bundle, as before
    else:
        try:
            ctx = ssl.create_default_context(cafile=path)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"{source} (ca_bundle): cannot load CA bundle {path}: {exc}") from None
    if not settings.tls_verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def describe(settings: Settings, url: str) -> str:
    """One line for `check` and the start-up log: how connections to `url` go out."""
    proxy = proxy_for(settings, url)
    path, source = ca_bundle(settings)
    trust = f"CA bundle {path} ({source})" if path else "certifi CA bundle"
    if not settings.tls_verify:
        trust = "TLS verification OFF (tls_verify=false)"
    how = f"via {proxy.display} ({proxy.source})" if proxy else "direct"
    return f"{how}, {trust}"


def http_client(settings: Settings, url: str, timeout: float | httpx.Timeout) -> httpx.AsyncClient:
    """An httpx client for `url`'s origin (IAM, `check`): the proxy and TLS trust above, nothing from env."""
    proxy = proxy_for(settings, url)
    transport = httpx.AsyncHTTPTransport(
        verify=ssl_context(settings), proxy=proxy.httpx_proxy() if proxy else None, retries=0
    )
    return httpx.AsyncClient(transport=transport, timeout=timeout, trust_env=False, follow_redirects=False)


__all__ = ["ProxyURL", "ca_bundle", "describe", "http_client", "parse_proxy", "proxy_for", "ssl_context"]
