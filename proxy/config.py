"""Settings: TOML file < environment (QCP_*) < CLI flags, validated once at start-up.

Every option exists as a TOML key, an env var `QCP_<KEY>` and (for the common ones) a CLI flag,
like uvicorn. Secrets are `SecretStr` so that they never print by accident.

Why one long module: every setting, its validation and where its value may come from (secret
files, saved Qiskit accounts, QISKIT_IBM_*) are read together; splitting them would scatter one
field's rules over several files.
"""

from __future__ import annotations

import ipaddress
import os
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SecretsSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from . import accounts

DEFAULT_IAM_URL = "https://iam.cloud.ibm.com/identity/token"
#: The IBM-API-Version the proxy pins towards the new API (what qiskit-ibm-runtime 0.51.0 sends).
DEFAULT_API_VERSION = "2026-04-15"
DEFAULT_INSTANCE = "ibm-q/open/main"
MIGRATION_GUIDE_URL = "https://quantum.cloud.ibm.com/docs/migration-guides/migrate-classic-rest-api"

_CRN_RE = re.compile(r"^crn:v1:[^:]*:[^:]*:[^:]*:(?P<region>[^:]*):[^:]*:[^:]*:[^:]*:[^:]*$")
_HGP_RE = re.compile(r"^[A-Za-z0-9_.\-]+/[A-Za-z0-9_.\-]+/[A-Za-z0-9_.\-]+$")
_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
#: The hosts legacy SDKs call when given no URL (measured; legacy-clients.md): intercepting mode.
DEFAULT_INTERCEPT_HOSTS = (
    "auth.quantum.ibm.com", "api.quantum.ibm.com",
    "auth.quantum-computing.ibm.com", "api.quantum-computing.ibm.com",
    "quantum-computing.cloud.ibm.com", "*.quantum-computing.cloud.ibm.com",
)
DEFAULT_INTERCEPT_IAM_HOSTS = ("iam.cloud.ibm.com", "iam.test.cloud.ibm.com")


class ConfigError(Exception):
    """A setting is missing or invalid; the message is one line naming it."""


def region_of_crn(crn: str) -> str:
    m = _CRN_RE.match(crn)
    if not m:
        raise ValueError("not a CRN (expected crn:v1:<cname>:<ctype>:<service>:<region>:a/<account>:<id>::)")
    return m.group("region")


def upstream_for_crn(crn: str) -> str:
    """The new API base for the CRN's region, as qiskit-ibm-runtime derives it."""
    region = region_of_crn(crn)
    if region in ("", "us-east"):
        return "https://quantum.cloud.ibm.com/api"
    return f"https://{region}.quantum.cloud.ibm.com/api"


def parse_client_tokens(raw: str | list[str] | dict[str, str] | None) -> dict[str, str]:
    """`name=token` or bare `token` entries -> {token: caller name}."""
    if raw is None:
        return {}
    items: list[tuple[str | None, str]] = []
    if isinstance(raw, dict):
        items = [(name, tok) for name, tok in raw.items()]
    else:
        entries = raw.split(",") if isinstance(raw, str) else list(raw)
        for entry in entries:
            entry = entry.strip()
            if not entry:
                continue
            name, sep, tok = entry.partition("=")
            items.append((name.strip(), tok.strip()) if sep else (None, entry))
    out: dict[str, str] = {}
    for i, (name, tok) in enumerate(items, start=1):
        if len(tok) < 8:
            raise ValueError("each client token must be at least 8 characters")
        out[tok] = name or f"client-{i}"
    return out


class RoutePolicy(BaseModel):
    """Per-route phase-out policy (see README, 'Phase-out')."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    policy: Literal["translate", "gone", "brownout"] = "translate"
    """translate (default), gone (every call answered 410) or brownout (some calls answered 410)."""
    brownout_share: float = Field(0.0, ge=0.0, le=1.0)
    """brownout: fraction of requests (0..1) answered 410."""
    brownout_windows: list[str] = Field(default_factory=list)
    """brownout: windows "2026-12-01T10:00:00Z/2026-12-01T11:00:00Z" answered 410."""
    deprecation: datetime | None = None
    """This route's Deprecation date (default: deprecation_date)."""
    sunset: datetime | None = None
    """This route's Sunset date (default: sunset_date)."""
    programs: Literal["translate", "refuse"] = "translate"
    """Job submissions: translate V1 primitive / circuit-runner jobs to V2 ("translate"), or refuse them."""


class Settings(BaseSettings):
    """All settings. Env vars are `QCP_` + the upper-cased field name."""

    model_config = SettingsConfigDict(
        env_prefix="QCP_", extra="forbid", validate_default=True, use_attribute_docstrings=True
    )
    #: Where api_key / service_crn came from (setting -> "QCP_API_KEY", "saved account 'x' (...)", ...).
    _sources: dict[str, str] = PrivateAttr(default_factory=dict)
    #: Where every value came from (file:line, env var, flag, secret file); set by load_settings.
    _origins: dict[str, Origin] = PrivateAttr(default_factory=dict)

    # --- the new API and IAM -------------------------------------------------------------
    api_key: SecretStr | None = None
    """IBM Cloud API key, exchanged for IAM bearer tokens (secret; or api_key_file, QISKIT_IBM_TOKEN)."""
    service_crn: str | None = None
    """CRN of the Qiskit Runtime instance, sent as Service-CRN (or QISKIT_IBM_INSTANCE)."""
    upstream_url: str | None = None
    """Base URL of the new API (default: from the CRN's region, e.g. https://quantum.cloud.ibm.com/api)."""
    iam_url: str = DEFAULT_IAM_URL
    """IBM Cloud IAM token endpoint."""
    api_version: str = DEFAULT_API_VERSION
    """IBM-API-Version sent upstream, YYYY-MM-DD (pinned so upstream behaviour does not drift)."""
    instances: dict[str, str] = Field(default_factory=dict)
    """Extra legacy instances {"hub/group/project": "crn:..."} (env: JSON)."""
    default_instance: str = DEFAULT_INSTANCE
    """The legacy hub/group/project name the default instance (service_crn) is shown under."""

    # --- who may call ----------------------------------------------------------------------
    client_tokens: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """Tokens callers must present: "name=token" or bare "token" (env: comma-separated; default: none)."""
    public_url: str | None = None
    """Base URL the proxy advertises to legacy SDKs in /users/me (default: as the caller reached it)."""

    # --- serving -----------------------------------------------------------------------------
    host: str = "127.0.0.1"
    """Bind address (beyond loopback only with client_tokens)."""
    port: int = Field(8080, ge=0, le=65535)
    """Bind port (0 = any free port)."""
    workers: int = Field(1, ge=1, le=64)
    """Worker processes."""
    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info"
    """Log level: critical, error, warning, info or debug."""
    log_format: Literal["text", "json"] = "text"
    """Log format: text or json (one JSON object a line, uvicorn's lines too)."""
    access_log: bool = True
    """Log one line per request."""
    max_body_bytes: int = Field(100 * 1024 * 1024, ge=1024)
    """Largest request body accepted, bytes (-> 413)."""

    # --- timeouts (seconds) ----------------------------------------------------------------
    connect_timeout: float = Field(5.0, gt=0)
    """Upstream connect timeout, seconds."""
    read_timeout: float = Field(60.0, gt=0)
    """Upstream read timeout, seconds."""
    write_timeout: float = Field(60.0, gt=0)
    """Upstream write timeout, seconds."""
    pool_timeout: float = Field(5.0, gt=0)
    """Seconds to wait for a free upstream connection."""
    submit_timeout: float = Field(900.0, gt=0)
    """Read timeout for job/session creation, seconds (the SDKs themselves wait up to 900 s)."""
    iam_timeout: float = Field(10.0, gt=0)
    """Timeout of an IAM token request, seconds."""
    transport: Literal["native", "aiohttp", "httpx"] = "native"
    """Upstream HTTP client: native (asyncio + httptools, fastest), aiohttp, or httpx."""
    max_connections: int = Field(256, ge=1)
    """Max simultaneous upstream connections."""

    # --- hardening (SECURITY.md) ---------------------------------------------------------------
    submission_marker: bool = True
    """Tag every forwarded job submission (qcp:req:<uuid>) to find it again when its answer is lost."""
    submission_recovery_seconds: float = Field(10.0, ge=0, le=300)
    """How long to look for a submission whose answer was lost before answering 409, seconds."""
    max_header_bytes: int = Field(32 * 1024, ge=1024, le=1024 * 1024)
    """Request line + headers, bytes (-> 431; nginx: 4 x 8 KiB, Envoy: 60 KiB)."""
    max_header_count: int = Field(100, ge=8, le=10_000)
    """Header fields per request (-> 431; Envoy's default)."""
    header_timeout: float = Field(10.0, gt=0)
    """Seconds a caller may take to send the request line and headers (slowloris; then closed)."""
    keepalive_timeout: float = Field(5.0, gt=0)
    """Seconds an idle keep-alive connection stays open."""
    max_client_connections: int = Field(1000, ge=1)
    """Simultaneous caller connections per server process (-> 503 with Retry-After above it)."""
    max_json_depth: int = Field(128, ge=2, le=10_000)
    """Nesting depth of JSON bodies the proxy rewrites (-> 400)."""
    max_json_elements: int = Field(1_000_000, ge=16)
    """Element count of JSON bodies the proxy rewrites (-> 400)."""
    auth_failure_burst: int = Field(20, ge=1)
    """Wrong client tokens per source address within auth_failure_window before 429."""
    auth_failure_window: float = Field(60.0, gt=0)
    """The window auth_failure_burst counts in, seconds."""

    # --- phase-out ---------------------------------------------------------------------------
    deprecation_date: datetime | None = None
    """Deprecation header date (default: 2025-07-01, when IBM retired Classic)."""
    sunset_date: datetime | None = None
    """Sunset header date, informational (default: none, no Sunset header)."""
    migration_guide_url: str = MIGRATION_GUIDE_URL
    """The migration guide the Link headers point to."""
    routes: dict[str, RoutePolicy] = Field(default_factory=dict)
    """Per-route policies {"GET /usage": {"policy": "gone"}, ...} keyed by "METHOD /legacy/template"."""
    usage_db: str = "qcp-usage.sqlite3"
    """Usage record: an SQLite file or a postgresql:// URL (shared by replicas); "" disables it."""
    admin_token: SecretStr | None = None
    """Token for /admin/... (secret; default: only loopback callers without a client token)."""
    metrics: bool = True
    """Serve Prometheus metrics on /metrics."""
    metrics_dir: str = ""
    """prometheus-client multiprocess directory for workers > 1 (emptied at start; "" = a temp dir)."""

    # --- corporate networks, secrets, TLS (README "Corporate networks and secrets") ----------
    outbound_proxy: SecretStr | None = None
    """Proxy for IAM and new-API connections, http://[user:password@]host:port (beats HTTPS_PROXY)."""
    proxy_from_env: bool = True
    """Honour HTTPS_PROXY / HTTP_PROXY / ALL_PROXY / NO_PROXY from the environment."""
    ca_bundle: str | None = None
    """PEM CA bundle for upstream TLS (default: SSL_CERT_FILE, REQUESTS_CA_BUNDLE, else certifi's)."""
    tls_verify: bool = True
    """Verify upstream TLS certificates (a saved account's verify=false turns it off)."""
    qiskit_account: str | None = None
    """Take api_key / service_crn from this saved qiskit-ibm-runtime account ("" = the default one)."""
    api_key_file: str | None = None
    """File holding api_key (Kubernetes / Docker secrets): the value or its file, not both."""
    client_tokens_file: str | None = None
    """File holding client_tokens, one a line: the value or its file, not both."""
    admin_token_file: str | None = None
    """File holding admin_token: the value or its file, not both."""
    secrets_dir: str | None = None
    """Directory with one file per setting named like its env var (QCP_API_KEY, ...); env only."""
    ssl_certfile: str | None = None
    """Serve HTTPS with this PEM certificate chain."""
    ssl_keyfile: str | None = None
    """The PEM private key of ssl_certfile."""
    admin_port: int | None = Field(None, ge=0, le=65535)
    """Separate port for /healthz, /readyz, /metrics, /admin (default: the main port)."""
    admin_host: str | None = None
    """Bind address of the admin port (default: host)."""
    readiness_ttl: float = Field(10.0, ge=0)
    """/readyz trusts a forward or probe that reached the new API this long, seconds."""

    # --- intercepting mode (HTTPS_PROXY + the local CA; README "Zero-change mode") ---------
    intercept_port: int | None = Field(None, ge=0, le=65535)
    """Port of the intercepting forward proxy (default: off; 0 = any free port)."""
    intercept_host: str = "127.0.0.1"
    """Bind address of the intercepting proxy (beyond loopback only with client_tokens)."""
    intercept_hosts: Annotated[list[str], NoDecode] = Field(default_factory=lambda: list(DEFAULT_INTERCEPT_HOSTS))
    """Hosts whose CONNECT is served by the proxy with a local-CA certificate (fnmatch; env: comma-separated)."""
    intercept_iam_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: list(DEFAULT_INTERCEPT_IAM_HOSTS)
    )
    """IAM hosts answered locally (the caller's key never goes to IAM; env: comma-separated)."""
    intercept_other_hosts: Literal["refuse", "tunnel"] = "refuse"
    """CONNECT to any other host: refuse (403) or tunnel (relayed byte for byte)."""
    ca_dir: str | None = None
    """Where the local CA of intercepting mode lives (default: the proxy's state directory)."""
    unknown_version_results: Literal["compat", "current"] = "compat"
    """Results for a runtime caller that sends no version: compat (decodes everywhere) or current."""

    # --- sources -------------------------------------------------------------------------------
    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        secrets_dir = os.environ.get("QCP_SECRETS_DIR")
        if secrets_dir:
            if not Path(secrets_dir).is_dir():
                raise ConfigError(f"QCP_SECRETS_DIR (secrets_dir): not a directory: {secrets_dir}")
            sources.append(SecretsSettingsSource(settings_cls, secrets_dir=secrets_dir))
        toml_file = _CONFIG_FILE.get("path")
        if toml_file:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_file))
        return tuple(sources)

    # --- validation ----------------------------------------------------------------------------
    @field_validator("api_key", "service_crn", "client_tokens", "admin_token", "outbound_proxy", mode="before")
    @classmethod
    def _placeholder(cls, v: Any) -> Any:
        refuse_placeholder(v)
        return v

    @field_validator("ca_bundle", "ssl_certfile", "ssl_keyfile", "api_key_file", "client_tokens_file",
                     "admin_token_file")
    @classmethod
    def _file(cls, v: str | None) -> str | None:
        if v is not None and not Path(v).expanduser().is_file():
            raise ValueError(f"file not found: {v}")
        return str(Path(v).expanduser()) if v is not None else None

    @field_validator("outbound_proxy")
    @classmethod
    def _proxy(cls, v: SecretStr | None) -> SecretStr | None:
        if v is not None and v.get_secret_value() and not re.match(r"^(http://)?[^/\s:@]", v.get_secret_value()):
            raise ValueError("must be http://[user:password@]host:port")
        return v

    @field_validator("client_tokens", mode="before")
    @classmethod
    def _tokens(cls, v: Any) -> list[str]:
        if isinstance(v, dict):  # TOML table: name = "token"
            v = [f"{name}={tok}" for name, tok in v.items()]
        elif isinstance(v, str):
            v = v.split(",")
        entries = [str(e).strip() for e in (v or []) if str(e).strip()]
        parse_client_tokens(entries)  # validates
        return entries

    @field_validator("intercept_hosts", "intercept_iam_hosts", mode="before")
    @classmethod
    def _host_list(cls, v: Any) -> list[str]:
        if isinstance(v, str):
            v = v.split(",")
        out = [str(h).strip().lower() for h in (v or []) if str(h).strip()]
        for h in out:
            if not re.match(r"^[a-z0-9*.\-]+$", h):
                raise ValueError(f"{h!r} is not a host name or *.pattern")
        return out

    @field_validator("service_crn")
    @classmethod
    def _crn(cls, v: str | None) -> str | None:
        if v is not None:
            v = v.strip()
            region_of_crn(v)
        return v

    @field_validator("instances")
    @classmethod
    def _instances(cls, v: dict[str, str]) -> dict[str, str]:
        for name, crn in v.items():
            if not _HGP_RE.match(name):
                raise ValueError(f"instance name {name!r} is not hub/group/project")
            region_of_crn(crn)
        return v

    @field_validator("default_instance")
    @classmethod
    def _default_instance(cls, v: str) -> str:
        if not _HGP_RE.match(v):
            raise ValueError("must be hub/group/project")
        return v

    @field_validator("api_version")
    @classmethod
    def _api_version(cls, v: str) -> str:
        if not _DATE_RE.match(v):
            raise ValueError("must be a date YYYY-MM-DD")
        return v

    @field_validator("upstream_url", "iam_url", "public_url", "migration_guide_url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is None:
            return v
        if not re.match(r"^https?://[^/\s]+", v):
            raise ValueError("must be an http(s) URL")
        return v.rstrip("/")

    @model_validator(mode="after")
    def _credentials(self) -> Settings:
        """Secret files, then QISKIT_IBM_* and saved accounts for what QCP_* leaves unset."""
        if self.secrets_dir and os.environ.get("QCP_SECRETS_DIR") != self.secrets_dir:
            raise ValueError("secrets_dir: set it as the env var QCP_SECRETS_DIR (it is read before other sources)")
        self._sources = resolve_credentials(self)
        if self.ssl_keyfile and not self.ssl_certfile:
            raise ValueError("ssl_keyfile: set without ssl_certfile (QCP_SSL_CERTFILE)")
        return self

    @model_validator(mode="after")
    def _dates(self) -> Settings:
        def check(dep: datetime | None, sun: datetime | None, where: str) -> None:
            if dep and sun and _aware(sun) < _aware(dep):
                raise ValueError(f"{where}: sunset is earlier than deprecation")

        check(self.deprecation_date, self.sunset_date, "sunset_date")
        for key, pol in self.routes.items():
            check(pol.deprecation or self.deprecation_date, pol.sunset or self.sunset_date, f"routes.{key}")
        return self

    # --- derived -------------------------------------------------------------------------------
    @property
    def effective_upstream_url(self) -> str:
        if self.upstream_url:
            return self.upstream_url
        if self.service_crn:
            return upstream_for_crn(self.service_crn)
        return "https://quantum.cloud.ibm.com/api"

    @property
    def client_token_names(self) -> dict[str, str]:
        """token -> caller name."""
        return parse_client_tokens(self.client_tokens)

    @property
    def instance_crns(self) -> dict[str, str]:
        """Legacy h/g/p name -> CRN, the default instance first."""
        out: dict[str, str] = {}
        if self.service_crn:
            out[self.default_instance] = self.service_crn
        for name, crn in self.instances.items():
            out.setdefault(name, crn)
        return out

    @property
    def credential_sources(self) -> dict[str, str]:
        """api_key / service_crn -> where it came from, for `start` and `check` to say."""
        return dict(self._sources)

    def require_credentials(self) -> bool:
        """True if both are set, False if neither; half set is a ConfigError naming the missing one."""
        has_key = self.api_key is not None and bool(self.api_key.get_secret_value())
        has_crn = bool(self.service_crn)
        if has_key and not has_crn:
            raise ConfigError(
                f"QCP_SERVICE_CRN (service_crn): the API key is set ({self._sources.get('api_key', 'QCP_API_KEY')}) "
                "but the instance CRN is not: set QCP_SERVICE_CRN (or QISKIT_IBM_INSTANCE, or the saved "
                "account's instance)"
            )
        if has_crn and not has_key:
            where = self._sources.get("service_crn", "QCP_SERVICE_CRN")
            raise ConfigError(
                f"QCP_API_KEY (api_key): the instance CRN is set ({where})"
                " but the API key is not: set QCP_API_KEY or QCP_API_KEY_FILE (or QISKIT_IBM_TOKEN)"
            )
        return has_key and has_crn

    def require_serving(self) -> None:
        """What `serve` needs beyond what the model validates."""
        if not self.require_credentials():
            raise ConfigError(
                "QCP_API_KEY (api_key): required to serve, with QCP_SERVICE_CRN: the IBM Cloud API key and the "
                "instance CRN (or --qiskit-account NAME, or QISKIT_IBM_TOKEN / QISKIT_IBM_INSTANCE)"
            )
        if not is_loopback(self.host) and not self.client_tokens:
            raise ConfigError(
                f"QCP_HOST (host): refusing to listen on {self.host} without QCP_CLIENT_TOKENS: "
                "anyone who can reach it would use your IBM credentials"
            )
        if self.intercept_port is not None and not is_loopback(self.intercept_host) and not self.client_tokens:
            raise ConfigError(
                f"QCP_INTERCEPT_HOST (intercept_host): refusing to intercept on {self.intercept_host} "
                "without QCP_CLIENT_TOKENS"
            )


PLACEHOLDER = "REPLACE_WITH_"


def refuse_placeholder(v: Any) -> None:
    """The deploy/ examples carry REPLACE_WITH_... values: starting with one is a mistake, say so."""
    raw = v.get_secret_value() if isinstance(v, SecretStr) else v
    items = raw.values() if isinstance(raw, dict) else raw if isinstance(raw, list) else [raw]
    if any(isinstance(x, str) and PLACEHOLDER in x for x in items):
        raise ValueError(f"still the example's placeholder ({PLACEHOLDER}...): put the real value in")


def _read_secret(path: str, field: str) -> str:
    try:
        value = Path(path).read_text().strip()
    except OSError as exc:
        raise ValueError(f"{field}_file: cannot read {path}: {type(exc).__name__}") from None
    if not value:
        raise ValueError(f"{field}_file: {path} is empty")
    try:
        refuse_placeholder(value)
    except ValueError as exc:
        raise ValueError(f"{field}_file: {path}: {exc}") from None
    return value


def resolve_credentials(s: Settings) -> dict[str, str]:
    """Fill secrets from their files, then api_key / service_crn from the fallbacks, in this order:
    QCP_* (value or file) > the saved account named by qiskit_account > QISKIT_IBM_TOKEN /
    QISKIT_IBM_INSTANCE > the default saved account (qiskit_account = ""). Returns the sources."""
    sources: dict[str, str] = {}
    for name in ("api_key", "client_tokens", "admin_token"):
        path = getattr(s, f"{name}_file")
        if path is None:
            continue
        if getattr(s, name):
            raise ValueError(f"{name}_file: QCP_{name.upper()} is set too: give the value or its file, not both")
        value = _read_secret(path, name)
        if name == "client_tokens":
            entries = [e.strip() for e in re.split(r"[,\n]", value) if e.strip()]
            try:
                parse_client_tokens(entries)
            except ValueError as exc:
                raise ValueError(f"client_tokens_file: {path}: {exc}") from None
            s.client_tokens = entries
        else:
            setattr(s, name, SecretStr(value))
        sources[name] = f"QCP_{name.upper()}_FILE ({path})"
    if s.api_key is not None and "api_key" not in sources:
        sources["api_key"] = "QCP_API_KEY"
    if s.service_crn:
        sources["service_crn"] = "QCP_SERVICE_CRN"

    def from_account(name: str) -> None:
        try:
            acct = accounts.load_account(name)
        except accounts.AccountError as exc:
            raise ValueError(f"qiskit_account: {exc}") from None
        if s.api_key is None:
            s.api_key = SecretStr(acct.token)
            sources["api_key"] = acct.label
        if not s.service_crn and acct.instance:
            try:
                region_of_crn(acct.instance)
            except ValueError as exc:
                raise ValueError(f"qiskit_account: {acct.label}: instance is {exc}") from None
            s.service_crn = acct.instance
            sources["service_crn"] = acct.label
        if acct.proxy and s.outbound_proxy is None:
            s.outbound_proxy = SecretStr(acct.proxy)
            sources["outbound_proxy"] = acct.label
        if not acct.verify and "tls_verify" not in s.model_fields_set:
            s.tls_verify = False
            sources["tls_verify"] = acct.label

    if s.qiskit_account:
        from_account(s.qiskit_account)
    env_key, env_crn = os.environ.get("QISKIT_IBM_TOKEN"), os.environ.get("QISKIT_IBM_INSTANCE")
    if s.api_key is None and env_key:
        refuse_placeholder(env_key)
        s.api_key = SecretStr(env_key.strip())
        sources["api_key"] = "QISKIT_IBM_TOKEN"
    if not s.service_crn and env_crn:
        try:
            region_of_crn(env_crn.strip())
        except ValueError as exc:
            raise ValueError(f"service_crn: QISKIT_IBM_INSTANCE is {exc}") from None
        s.service_crn = env_crn.strip()
        sources["service_crn"] = "QISKIT_IBM_INSTANCE"
    if s.qiskit_account == "":
        from_account("")
    return sources


def _aware(d: datetime) -> datetime:
    return d if d.tzinfo else d.replace(tzinfo=timezone.utc)


def is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return host == "localhost"
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


_CONFIG_FILE: dict[str, str | None] = {}


def load_settings(config_file: str | os.PathLike[str] | None = None, **overrides: Any) -> Settings:
    """Build Settings from file/env/overrides; any problem becomes one-line ConfigError."""
    path = config_file or os.environ.get("QCP_CONFIG") or None
    if path is not None and not Path(path).is_file():
        raise ConfigError(f"QCP_CONFIG (--config): file not found: {path}")
    overrides = {k: v for k, v in overrides.items() if v is not None}
    _CONFIG_FILE["path"] = str(path) if path else None
    env_backup = os.environ.pop("QCP_CONFIG", None)
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err.get("loc", ())) or "settings"
        msg = err.get("msg", "invalid").removeprefix("Value error, ")
        if not err.get("loc"):  # a model-level check: its message starts with the setting it is about
            loc = msg.split(":", 1)[0].strip()
            msg = msg.split(":", 1)[1].strip() if ":" in msg else msg
        field = loc.split(".")[0]
        raise ConfigError(f"QCP_{field.upper()} ({loc}): {msg}") from None
    except ValueError as exc:  # TOML syntax errors and the like
        raise ConfigError(f"QCP_CONFIG ({path}): {exc}") from None
    finally:
        _CONFIG_FILE["path"] = None
        if env_backup is not None:
            os.environ["QCP_CONFIG"] = env_backup
