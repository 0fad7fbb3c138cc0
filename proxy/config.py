"""Settings: TOML file < environment (QCP_*) < CLI flags, validated once at start-up.

Every option exists as a TOML key, an env var `QCP_<KEY>` and (for the common ones) a CLI flag,
like uvicorn. Secrets are `SecretStr` so that they never print by accident.
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
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

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

    model_config = ConfigDict(extra="forbid")

    policy: Literal["translate", "gone", "brownout"] = "translate"
    #: brownout: fraction of requests (0..1) answered 410.
    brownout_share: float = Field(0.0, ge=0.0, le=1.0)
    #: brownout: windows "2026-12-01T10:00:00Z/2026-12-01T11:00:00Z" answered 410.
    brownout_windows: list[str] = Field(default_factory=list)
    deprecation: datetime | None = None
    sunset: datetime | None = None


class Settings(BaseSettings):
    """All settings. Env vars are `QCP_` + the upper-cased field name."""

    model_config = SettingsConfigDict(env_prefix="QCP_", extra="forbid", validate_default=True)

    # --- the new API and IAM -------------------------------------------------------------
    api_key: SecretStr | None = None
    service_crn: str | None = None
    upstream_url: str | None = None
    iam_url: str = DEFAULT_IAM_URL
    api_version: str = DEFAULT_API_VERSION
    #: Extra legacy instances: {"hub/group/project": "crn:..."}; env as JSON.
    instances: dict[str, str] = Field(default_factory=dict)
    #: The legacy name the default instance (QCP_SERVICE_CRN) is shown under.
    default_instance: str = DEFAULT_INSTANCE

    # --- who may call ----------------------------------------------------------------------
    #: Tokens callers must present: "name=token" or bare "token" entries (env: comma-separated).
    client_tokens: Annotated[list[str], NoDecode] = Field(default_factory=list)
    #: Base URL the proxy advertises to legacy SDKs in /users/me (default: as the caller reached it).
    public_url: str | None = None

    # --- serving -----------------------------------------------------------------------------
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    workers: int = Field(1, ge=1, le=64)
    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info"
    log_format: Literal["text", "json"] = "text"
    access_log: bool = True
    max_body_bytes: int = Field(100 * 1024 * 1024, ge=1024)

    # --- timeouts (seconds) ----------------------------------------------------------------
    connect_timeout: float = Field(5.0, gt=0)
    read_timeout: float = Field(60.0, gt=0)
    write_timeout: float = Field(60.0, gt=0)
    pool_timeout: float = Field(5.0, gt=0)
    #: Read timeout for job/session creation: the SDKs themselves wait up to 900 s.
    submit_timeout: float = Field(900.0, gt=0)
    iam_timeout: float = Field(10.0, gt=0)
    #: Upstream HTTP client transport: "native" (asyncio + httptools, fastest: BENCHMARKS.md),
    #: "aiohttp", or "httpx" (httpcore's pool).
    transport: Literal["native", "aiohttp", "httpx"] = "native"
    #: Max simultaneous upstream connections.
    max_connections: int = Field(256, ge=1)

    # --- phase-out ---------------------------------------------------------------------------
    deprecation_date: datetime | None = None
    sunset_date: datetime | None = None
    migration_guide_url: str = MIGRATION_GUIDE_URL
    #: {"GET /usage": {"policy": "gone"}, ...} keyed by "METHOD /legacy/template".
    routes: dict[str, RoutePolicy] = Field(default_factory=dict)
    #: SQLite file for the persistent usage record; "" disables it.
    usage_db: str = "qcp-usage.sqlite3"
    #: Token for the admin endpoints (/admin/...); unset = only loopback callers without a client token.
    admin_token: SecretStr | None = None
    metrics: bool = True

    # --- intercepting mode (HTTPS_PROXY + the local CA; README "Zero-change mode") ---------
    #: Port of the intercepting forward proxy; unset = off, 0 = any free port.
    intercept_port: int | None = Field(None, ge=0, le=65535)
    intercept_host: str = "127.0.0.1"
    #: Hosts whose CONNECT is terminated with a local-CA leaf and served by the proxy (fnmatch patterns).
    intercept_hosts: Annotated[list[str], NoDecode] = Field(default_factory=lambda: list(DEFAULT_INTERCEPT_HOSTS))
    #: IAM hosts answered locally (a proxy bearer for a client token); the caller's key never goes to IAM.
    intercept_iam_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: list(DEFAULT_INTERCEPT_IAM_HOSTS)
    )
    #: CONNECT to any other host: "refuse" (403) or "tunnel" (relayed byte for byte, untouched).
    intercept_other_hosts: Literal["refuse", "tunnel"] = "refuse"
    #: Where the local CA lives (created on first use); default: the proxy's state directory.
    ca_dir: str | None = None
    #: Results for a runtime caller that sends no version (USAGE_DATA_OPT_OUT): "compat" decodes everywhere.
    unknown_version_results: Literal["compat", "current"] = "compat"

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
        toml_file = _CONFIG_FILE.get("path")
        if toml_file:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_file))
        return tuple(sources)

    # --- validation ----------------------------------------------------------------------------
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

    def require_serving(self) -> None:
        """What `serve` needs beyond what the model validates."""
        if self.api_key is None or not self.api_key.get_secret_value():
            raise ConfigError("QCP_API_KEY (api_key): required to serve: the IBM Cloud API key")
        if not self.service_crn:
            raise ConfigError("QCP_SERVICE_CRN (service_crn): required to serve: the instance CRN")
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
