"""Settings: TOML file < QCP_SECRETS_DIR < environment (QCP_*) < CLI flags, validated once at start-up.

Every option exists as a TOML key, an env var `QCP_<KEY>` and a CLI flag, like uvicorn. Secrets are
`SecretStr` so that they never print by accident. `load_settings` reads the sources itself and
hands pydantic-settings the merged values, so that it knows where each value came from: every
error names it (`FILE:LINE: key`, `QCP_X (env)`, `--x (flag)`), all errors are reported at once,
unknown keys and QCP_* env vars are errors with a "did you mean", and `config check` shows each
value's source. The field docstrings are the settings' help text (`model_fields[...].description`).

Why one long module: every setting, its validation and where its value may come from (secret
files, saved Qiskit accounts, QISKIT_IBM_*) are read together; splitting them would scatter one
field's rules over several files.
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import os
import re
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any, Literal, get_origin
from urllib.parse import urlsplit

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
)

from . import accounts

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

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


#: When no deprecation date is set, a Classic call is deprecated since IBM retired Classic (README
#: "Phase-out"); `proxy.phaseout.policy.CLASSIC_RETIRED` is the same date (a test pins that).
DEFAULT_DEPRECATION_DATE = datetime(2025, 7, 1, tzinfo=timezone.utc)


class ConfigError(Exception):
    """Settings that cannot work. `.errors` lists every problem, each naming where the value came from
    (file:line, env var, flag); `str()` is one line for one problem, else "N problems:" and indented lines."""

    def __init__(self, *errors: str) -> None:
        self.errors = [e for e in errors if e] or ["invalid settings"]
        super().__init__(*self.errors)

    def __str__(self) -> str:
        if len(self.errors) == 1:
            return self.errors[0]
        return f"{len(self.errors)} problems:\n" + "\n".join(f"  {e}" for e in self.errors)


@dataclass(frozen=True)
class Origin:
    """Where one setting's value came from."""

    kind: Literal["default", "file", "env", "flag", "secret file"]
    #: The file, env var or flag name ("" for a default).
    name: str = ""
    line: int | None = None

    def describe(self) -> str:
        """For the `config check` table: default / FILE:LINE / env QCP_X / flag --x / secret file PATH."""
        if self.kind == "file":
            return f"{self.name}:{self.line}" if self.line else self.name
        return f"{self.kind} {self.name}".strip()

    def where(self, path: tuple[str | int, ...]) -> str:
        """The start of an error message about the value at `path` (field first)."""
        dotted = _dotted(path)
        if self.kind == "file":
            return f"{self.name}:{self.line}: {dotted}" if self.line else f"{self.name}: {dotted}"
        inner = f": {dotted}" if len(path) > 1 else ""
        if self.kind == "default":
            return f"{dotted} (default)"
        if self.kind == "secret file":
            return f"{_env_name(str(path[0]))} (secret file {self.name}){inner}"
        return f"{self.name} ({self.kind}){inner}"


class _Problems(ConfigError):
    """Cross-field problems found by the model validator, as (setting path, message) pairs that
    `load_settings` prefixes with where each setting came from."""

    def __init__(self, problems: list[tuple[tuple[str | int, ...], str]]) -> None:
        self.problems = problems
        super().__init__(*(f"{_dotted(path)}: {msg}" for path, msg in problems))


def _env_name(field: str) -> str:
    return f"QCP_{field.upper()}"


def _flag_name(field: str) -> str:
    return "--" + field.replace("_", "-")


def _dotted(path: tuple[str | int, ...]) -> str:
    """routes."GET /usage".sunset: TOML's spelling of a nested key."""
    out = []
    for i, part in enumerate(path):
        if isinstance(part, int):
            out.append(f"[{part}]")
            continue
        text = part if re.fullmatch(r"[A-Za-z0-9_-]+", part) else '"' + part.replace('"', '\\"') + '"'
        out.append(text if i == 0 else "." + text)
    return "".join(out)


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
    _toml_lines: dict[tuple[str, ...], int] = PrivateAttr(default_factory=dict)

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
        """`load_settings` reads the file, the env and the secrets directory itself (to say where each
        value came from) and passes them all as init values; a bare `Settings()` reads the env."""
        if _ORIGINS.get() is not None:
            return (init_settings,)
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        secrets_dir = os.environ.get("QCP_SECRETS_DIR")
        if secrets_dir and Path(secrets_dir).is_dir():
            sources.append(SecretsSettingsSource(settings_cls, secrets_dir=secrets_dir))
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
        """What upstream/egress.py's parse_proxy accepts, checked here too so that `config check` (offline)
        refuses it; never echoes the value (it may hold a password)."""
        value = v.get_secret_value().strip() if v is not None else ""
        if not value:
            return v
        try:
            u = urlsplit(value if "://" in value else "http://" + value)
            _ = u.port
        except ValueError:
            raise ValueError("not a URL (expected http://[user:password@]host:port)") from None
        if u.scheme != "http":
            raise ValueError(f"scheme {u.scheme!r} is not supported: use http://[user:password@]host:port")
        if not u.hostname:
            raise ValueError("no host (expected http://[user:password@]host:port)")
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
            try:
                region_of_crn(crn)
            except ValueError as exc:
                raise ValueError(f"{name!r}: {exc}") from None
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
    def _cross_checks(self) -> Settings:
        """Secret files, QISKIT_IBM_* and saved accounts for what QCP_* leaves unset, then the checks
        that involve several settings; every problem found is reported, not only the first."""
        problems: list[tuple[tuple[str | int, ...], str]] = []
        if self.secrets_dir and os.environ.get("QCP_SECRETS_DIR") != self.secrets_dir:
            problems.append((("secrets_dir",), "set it as the env var QCP_SECRETS_DIR (it is read before the rest)"))
        try:
            self._sources = resolve_credentials(self)
        except _CredentialError as exc:
            problems.append((exc.path, exc.message))
        if self.ssl_keyfile and not self.ssl_certfile:
            problems.append((("ssl_keyfile",), f"set without ssl_certfile ({_source_of('ssl_certfile')})"))
        problems += self._date_problems()
        if problems:
            raise _Problems(problems)
        return self

    def _date_problems(self) -> list[tuple[tuple[str | int, ...], str]]:
        """Sunset before deprecation, globally and per route. An unset deprecation date means
        DEFAULT_DEPRECATION_DATE (what the Deprecation header then carries), so a sunset alone
        before it is refused too."""
        out: list[tuple[tuple[str | int, ...], str]] = []

        def why(sun: datetime, sun_name: str, dep: datetime | None, dep_name: str) -> str | None:
            effective = _aware(dep) if dep else DEFAULT_DEPRECATION_DATE
            if _aware(sun) >= effective:
                return None
            dep_text = (
                f"{dep_name} {_day(effective)}" if dep
                else f"the default deprecation date {_day(effective)}, when IBM retired Classic; "
                f"{dep_name} is unset"
            )
            return f"sunset is earlier than deprecation ({sun_name} {_day(sun)} < {dep_text})"

        if self.sunset_date is not None:
            msg = why(self.sunset_date, "sunset_date", self.deprecation_date, "deprecation_date")
            if msg:
                out.append((("sunset_date",), msg))
        for key, pol in self.routes.items():
            if pol.sunset is None and pol.deprecation is None:
                continue  # the global dates, checked above
            sun = pol.sunset or self.sunset_date
            if sun is None:
                continue
            dep = pol.deprecation or self.deprecation_date
            msg = why(
                sun, "sunset" if pol.sunset else "sunset_date",
                dep, "deprecation" if pol.deprecation else "deprecation_date",
            )
            if msg:
                out.append((("routes", key, "sunset" if pol.sunset else "deprecation"), msg))
        return out

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

    def where(self, *path: str | int) -> str:
        """How a message about the value at `path` starts (`FILE:LINE: routes."GET /x"`, `QCP_X (env)`,
        `--x (flag)`), for checks made after loading (the route keys, in `config check`). A value
        set in code (`Settings(...)`, no loader) has no recorded origin: it is named by its env var."""
        head = str(path[0]) if path else ""
        if head in type(self).model_fields and head not in self._origins and head in self.model_fields_set:
            return f"{_env_name(head)} ({_dotted(path)})"
        return _where(self._origins, self._toml_lines, path)

    def value_source(self, name: str) -> str:
        """Where setting `name`'s effective value came from, for `config check`: default, FILE:LINE,
        env QCP_X, flag --x, secret file PATH, saved account 'x' (FILE), env QISKIT_IBM_TOKEN."""
        filled = self._sources.get(name)
        if filled and filled != _env_name(name):  # filled in by resolve_credentials
            file_prefix = f"{_env_name(name)}_FILE ("
            if filled.startswith(file_prefix):
                return "secret file " + filled[len(file_prefix):-1]
            return f"env {filled}" if filled.startswith("QISKIT_IBM_") else filled
        origin = self._origins.get(name)
        return origin.describe() if origin else "default"

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


class _CredentialError(ValueError):
    """A problem filling in credentials, about the setting (or env var) at `path`."""

    def __init__(self, path: tuple[str | int, ...], message: str) -> None:
        self.path, self.message = path, message
        super().__init__(f"{_dotted(path)}: {message}")


def _read_secret(path: str, field: str) -> str:
    where = (f"{field}_file",)
    try:
        value = Path(path).read_text().strip()
    except OSError as exc:
        raise _CredentialError(where, f"cannot read {path}: {exc.strerror or type(exc).__name__}") from None
    if not value:
        raise _CredentialError(where, f"{path} is empty")
    try:
        refuse_placeholder(value)
    except ValueError as exc:
        raise _CredentialError(where, f"{path}: {exc}") from None
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
            raise _CredentialError(
                (f"{name}_file",), f"{_source_of(name)} is set too: give the value or its file, not both"
            )
        value = _read_secret(path, name)
        if name == "client_tokens":
            entries = [e.strip() for e in re.split(r"[,\n]", value) if e.strip()]
            try:
                parse_client_tokens(entries)
            except ValueError as exc:
                raise _CredentialError(("client_tokens_file",), f"{path}: {exc}") from None
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
            raise _CredentialError(("qiskit_account",), str(exc)) from None
        if s.api_key is None:
            s.api_key = SecretStr(acct.token)
            sources["api_key"] = acct.label
        if not s.service_crn and acct.instance:
            try:
                region_of_crn(acct.instance)
            except ValueError as exc:
                raise _CredentialError(("qiskit_account",), f"{acct.label}: instance is {exc}") from None
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
        try:
            refuse_placeholder(env_key)
        except ValueError as exc:
            raise _CredentialError(("QISKIT_IBM_TOKEN (env)",), str(exc)) from None
        s.api_key = SecretStr(env_key.strip())
        sources["api_key"] = "QISKIT_IBM_TOKEN"
    if not s.service_crn and env_crn:
        try:
            region_of_crn(env_crn.strip())
        except ValueError as exc:
            raise _CredentialError(("QISKIT_IBM_INSTANCE (env)",), str(exc)) from None
        s.service_crn = env_crn.strip()
        sources["service_crn"] = "QISKIT_IBM_INSTANCE"
    if s.qiskit_account == "":
        from_account("")
    return sources


def _aware(d: datetime) -> datetime:
    return d if d.tzinfo else d.replace(tzinfo=timezone.utc)


def _day(d: datetime) -> str:
    """2026-01-01, or the full UTC time when it is not midnight."""
    d = _aware(d).astimezone(timezone.utc)
    return d.strftime("%Y-%m-%d") if d.time() == datetime.min.time() else d.strftime("%Y-%m-%dT%H:%M:%SZ")


def is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return host == "localhost"
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


# ============================================================================ loading, with origins

#: The origins of the values being validated, while `load_settings` runs (validators name them).
_ORIGINS: ContextVar[dict[str, Origin] | None] = ContextVar("qcp_settings_origins", default=None)
#: QCP_* env vars that are not settings: the config file, and the knobs of the test suite, the
#: benchmarks, the examples and the legacy-SDK scripts (tests/legacy/). Any other unknown QCP_* is a typo.
NON_SETTING_ENV = frozenset({
    "QCP_CONFIG", "QCP_SKIP_LEGACY_SDKS", "QCP_SOAK_SECONDS", "QCP_PROXY_CMD", "QCP_URL", "QCP_BACKEND",
})
NON_SETTING_ENV_PREFIXES = ("QCP_LEGACY_",)
#: Settings whose rejected input is never echoed in an error.
_SECRET_FIELDS = frozenset({"api_key", "admin_token", "outbound_proxy", "client_tokens", "usage_db"})
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _source_of(field: str) -> str:
    """`QCP_X (env)`, `FILE:LINE: x`, `--x (flag)`: where a setting came from, for a message about
    another setting; the env var name when it was not set."""
    origins = _ORIGINS.get() or {}
    origin = origins.get(field)
    return _env_name(field) if origin is None or origin.kind == "default" else origin.where((field,))


def suggest(name: str, candidates: list[str] | tuple[str, ...] | set[str]) -> str | None:
    """The candidate `name` was probably meant to be: a known name it ends with (listen_port ->
    port), else the closest by difflib."""
    name = name.lower()
    parts = name.split("_")
    for i in range(1, len(parts)):
        tail = "_".join(parts[i:])
        if tail in candidates:
            return tail
    close = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
    return close[0] if close else None


def _did_you_mean(name: str, candidates: Any, spell: Any = repr) -> str:
    hit = suggest(name, candidates)
    return f" (did you mean {spell(hit)}?)" if hit else ""


def _json_fields() -> frozenset[str]:
    """Fields whose env / secret-file value is JSON (dicts and lists not marked NoDecode)."""
    out = set()
    for name, info in Settings.model_fields.items():
        if any(m is NoDecode or isinstance(m, NoDecode) for m in info.metadata):
            continue
        if get_origin(info.annotation) in (dict, list):
            out.add(name)
    return frozenset(out)


def _toml_key(text: str, i: int) -> tuple[list[str], int]:
    """A (dotted) TOML key starting at `i`: its parts and the index after it."""
    keys: list[str] = []
    n = len(text)
    while True:
        while i < n and text[i] in " \t":
            i += 1
        if i < n and text[i] == '"':
            j = i + 1
            while text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            keys.append(tomllib.loads("k = " + text[i:j + 1])["k"])
            i = j + 1
        elif i < n and text[i] == "'":
            j = text.index("'", i + 1)
            keys.append(text[i + 1:j])
            i = j + 1
        else:
            m = _BARE_KEY.match(text, i)
            if not m:
                break
            keys.append(m.group())
            i = m.end()
        while i < n and text[i] in " \t":
            i += 1
        if i < n and text[i] == ".":
            i += 1
            continue
        return keys, i
    return keys, i


def toml_key_lines(text: str) -> dict[tuple[str, ...], int]:
    """(table..., key...) -> the line that defines it, for messages naming file:line. `text` is
    valid TOML (tomllib has parsed it); keys inside inline tables and arrays take the outer key's line."""
    found: dict[tuple[str, ...], int] = {}
    table: tuple[str, ...] = ()
    i, n, line, depth, at_statement = 0, len(text), 1, 0, True
    try:
        while i < n:
            c = text[i]
            if c == "\n":
                line, i = line + 1, i + 1
                at_statement = at_statement or depth == 0
                continue
            if c in " \t\r":
                i += 1
                continue
            if c == "#":
                j = text.find("\n", i)
                i = n if j < 0 else j
                continue
            if at_statement and depth == 0:
                at_statement = False
                if c == "[":
                    double = text.startswith("[[", i)
                    keys, i = _toml_key(text, i + (2 if double else 1))
                    table = tuple(keys)
                    for k in range(1, len(table) + 1):
                        found.setdefault(table[:k], line)
                    i = text.index("]", i) + (2 if double else 1)
                    continue
                keys, i = _toml_key(text, i)
                for k in range(1, len(keys) + 1):
                    found.setdefault(table + tuple(keys[:k]), line)
                i = text.index("=", i) + 1
                continue
            if text.startswith(('"""', "'''"), i):
                j = text.index(text[i:i + 3], i + 3)
                while text.startswith(text[i], j + 3):  # a closing """ may follow up to two quotes
                    j += 1
                line += text.count("\n", i, j)
                i = j + 3
            elif c == '"':
                j = i + 1
                while text[j] != '"':
                    j += 2 if text[j] == "\\" else 1
                i = j + 1
            elif c == "'":
                i = text.index("'", i + 1) + 1
            else:
                depth += 1 if c in "[{" else -1 if c in "]}" else 0
                i += 1
    except (ValueError, IndexError):  # best effort: line numbers help, they are not needed
        pass
    return found


def _where(origins: dict[str, Origin], lines: dict[tuple[str, ...], int], path: tuple[str | int, ...]) -> str:
    """How an error about the value at `path` starts: FILE:LINE: key, QCP_X (env), --x (flag), ...
    A first part that is not a setting is used as it is (e.g. "QISKIT_IBM_TOKEN (env)")."""
    head = str(path[0]) if path else "settings"
    origin = origins.get(head)
    if origin is None:
        return Origin("default").where(path) if head in Settings.model_fields else head
    if origin.kind == "file":
        origin = Origin("file", origin.name, _line_of(lines, path) or origin.line)
    return origin.where(path)


def _line_of(lines: dict[tuple[str, ...], int], path: tuple[str | int, ...]) -> int | None:
    """The line of the longest prefix of `path` that the file defines."""
    keys = tuple(str(p) for p in path if isinstance(p, str))
    for k in range(len(keys), 0, -1):
        if keys[:k] in lines:
            return lines[keys[:k]]
    return None


class _Loader:
    """Collects raw values, each with its Origin, from file < secrets dir < env < flags, and every
    problem found on the way (so that all of them are reported at once)."""

    def __init__(self) -> None:
        self.fields = tuple(Settings.model_fields)
        self.json_fields = _json_fields()
        self.raw: dict[str, Any] = {}
        self.origins: dict[str, Origin] = {}
        self.errors: list[str] = []
        self.toml_lines: dict[tuple[str, ...], int] = {}
        self.file = ""

    def put(self, field: str, value: Any, origin: Origin) -> None:
        self.raw[field] = value
        self.origins[field] = origin

    def where(self, path: tuple[str | int, ...]) -> str:
        return _where(self.origins, self.toml_lines, path)

    def in_order(self, errors: list[str]) -> list[str]:
        """The file's problems first, by line, then secret files, env vars and flags."""
        def rank(text: str) -> tuple[int, int]:
            if self.file and text.startswith(self.file + ":"):
                m = re.match(r"\d+", text[len(self.file) + 1:])
                return (0, int(m.group()) if m else 0)
            head = text.split(": ", 1)[0]
            for i, kind in enumerate(("(secret file", "(env)", "(flag)"), start=1):
                if kind in head:
                    return (i, 0)
            return (4, 0)

        return sorted(errors, key=rank)

    def read_file(self, path: str, named_by: str) -> None:
        self.file = path
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (FileNotFoundError, NotADirectoryError):
            self.errors.append(f"{named_by}: file not found: {path}")
            return
        except IsADirectoryError:
            self.errors.append(f"{named_by}: a directory, not a TOML file: {path}")
            return
        except (OSError, UnicodeDecodeError) as exc:
            self.errors.append(f"{path}: cannot read: {getattr(exc, 'strerror', None) or exc}")
            return
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            m = re.match(r"^(.*) \(at line (\d+), column (\d+)\)$", str(exc))
            where = f"{path}:{m.group(2)}:{m.group(3)}" if m else path
            self.errors.append(f"{where}: TOML syntax error: {m.group(1) if m else exc}")
            return
        self.toml_lines = toml_key_lines(text)
        for key, value in data.items():
            line = self.toml_lines.get((key,))
            if key not in self.fields:
                at = f"{path}:{line}" if line else path
                self.errors.append(f"{at}: {_dotted((key,))}: unknown setting{_did_you_mean(key, self.fields)}")
                continue
            self.put(key, value, Origin("file", path, line))

    def decode(self, field: str, value: str, where: str) -> tuple[bool, Any]:
        if field not in self.json_fields:
            return True, value
        try:
            return True, json.loads(value)
        except json.JSONDecodeError as exc:
            self.errors.append(f"{where}: not valid JSON: {exc}")
            return False, None

    def unknown_env(self, name: str, where: str) -> None:
        up = name.upper()
        if up in NON_SETTING_ENV or up.startswith(NON_SETTING_ENV_PREFIXES):
            return
        hit = suggest(up[4:], (*self.fields, "config"))
        hint = f" (did you mean {_env_name(hit)}?)" if hit else ""
        self.errors.append(f"{where}: unknown setting{hint}")

    def read_secrets_dir(self, directory: str) -> None:
        d = Path(directory)
        if not d.is_dir():
            self.errors.append(f"QCP_SECRETS_DIR (env): not a directory: {directory}")
            return
        for f in sorted(d.iterdir()):
            up = f.name.upper()
            if not up.startswith("QCP_") or not f.is_file():
                continue  # Kubernetes' ..data links, other tools' secrets
            field = up[4:].lower()
            where = f"{f.name} (secret file {f})"
            if field not in self.fields:
                self.unknown_env(f.name, where)
                continue
            try:
                text = f.read_text().strip()
            except (OSError, UnicodeDecodeError) as exc:
                self.errors.append(f"{where}: cannot read: {getattr(exc, 'strerror', None) or exc}")
                continue
            ok, value = self.decode(field, text, where)
            if ok:
                self.put(field, value, Origin("secret file", str(f)))

    def read_env(self) -> None:
        for name in sorted(os.environ):
            if not name.upper().startswith("QCP_"):
                continue
            field = name[4:].lower()
            if field not in self.fields:
                self.unknown_env(name, f"{name} (env)")
                continue
            ok, value = self.decode(field, os.environ[name], f"{name} (env)")
            if ok:
                self.put(field, value, Origin("env", name))

    def read_overrides(self, overrides: dict[str, Any]) -> None:
        for name, value in overrides.items():
            if value is None:
                continue
            if name not in self.fields:
                self.errors.append(
                    f"{_flag_name(name)} (flag): unknown setting{_did_you_mean(name, self.fields, _flag_name)}"
                )
                continue
            self.put(name, value, Origin("flag", _flag_name(name)))

    def check_route_keys(self) -> None:
        """Unknown keys inside [routes."..."] tables, with a suggestion; dropped so that pydantic does
        not report them again."""
        routes = self.raw.get("routes")
        if not isinstance(routes, dict):
            return
        known = tuple(RoutePolicy.model_fields)
        cleaned: dict[Any, Any] = {}
        for key, pol in routes.items():
            if isinstance(pol, dict):
                for k in [k for k in pol if k not in known]:
                    self.errors.append(
                        f"{self.where(('routes', key, k))}: unknown setting{_did_you_mean(k, known)}"
                    )
                pol = {k: v for k, v in pol.items() if k in known}
            cleaned[key] = pol
        self.raw["routes"] = cleaned

    def describe(self, err: Any) -> str:
        """One pydantic error as `<where>: <what> (got <input>)`."""
        loc = tuple(err.get("loc", ()))
        msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        kind = err.get("type")
        if kind == "extra_forbidden":
            msg = "unknown setting"
        elif kind not in ("value_error", "assertion_error") and loc and loc[0] not in _SECRET_FIELDS:
            given = err.get("input")
            if isinstance(given, (str, int, float)) and not isinstance(given, bool) and len(repr(given)) <= 60:
                msg += f" (got {given!r})"
        return f"{self.where(loc)}: {msg}" if loc else msg


def load_settings(config_file: str | os.PathLike[str] | None = None, **overrides: Any) -> Settings:
    """Settings from the TOML file < QCP_SECRETS_DIR < QCP_* env < `overrides` (the CLI flags).

    Every problem is collected and raised as one ConfigError whose lines each name where the bad
    value came from (`FILE:LINE: key`, `QCP_X (env)`, `--x (flag)`, `QCP_X (secret file PATH)`);
    unknown keys and QCP_* env vars are problems too, with a "did you mean"."""
    loader = _Loader()
    if config_file is not None:
        loader.read_file(str(config_file), "--config (flag)")
    elif os.environ.get("QCP_CONFIG"):
        loader.read_file(os.environ["QCP_CONFIG"], "QCP_CONFIG (env)")
    if os.environ.get("QCP_SECRETS_DIR"):
        loader.read_secrets_dir(os.environ["QCP_SECRETS_DIR"])
    loader.read_env()
    loader.read_overrides(overrides)
    loader.check_route_keys()
    errors = loader.errors
    token = _ORIGINS.set(loader.origins)
    try:
        settings = Settings(**loader.raw)
    except ValidationError as exc:
        errors += [loader.describe(err) for err in exc.errors()]
        raise ConfigError(*loader.in_order(errors)) from None
    except _Problems as exc:
        errors += [f"{loader.where(path)}: {msg}" for path, msg in exc.problems]
        raise ConfigError(*loader.in_order(errors)) from None
    finally:
        _ORIGINS.reset(token)
    if errors:
        raise ConfigError(*loader.in_order(errors))
    settings._origins = loader.origins
    settings._toml_lines = loader.toml_lines
    return settings
