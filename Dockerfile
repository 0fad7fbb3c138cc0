# syntax=docker/dockerfile:1
# qiskit-classic-proxy: container image. How to build and run it: deploy/README.md.
#
#   docker build -t qiskit-classic-proxy:0.1.0 .
#   docker run --rm -p 127.0.0.1:8080:8080 --read-only \
#     -e QCP_API_KEY -e QCP_SERVICE_CRN -e QCP_CLIENT_TOKENS qiskit-classic-proxy:0.1.0
#
# The default command listens on 0.0.0.0 (so a published port works), which the proxy only accepts
# together with QCP_CLIENT_TOKENS. As a sidecar in the caller's own pod, run `serve --host 127.0.0.1`
# instead: then no client token is needed and nothing outside the pod can reach it.
# Nothing secret is baked in: the API key comes from the environment or a mounted config file.

# --- stage 1: wheels of the proxy and of its runtime dependencies (no test extra) --------------
FROM python:3.11-slim-bookworm AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
# .dockerignore lets in only pyproject.toml, README.md, LICENSE, proxy/ and deploy/docker/.
COPY . .
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

# --- stage 2: the runtime image ----------------------------------------------------------------
FROM python:3.11-slim-bookworm
LABEL org.opencontainers.image.title="qiskit-classic-proxy" \
      org.opencontainers.image.description="IBM Quantum Platform Classic REST API -> Qiskit Runtime REST API proxy" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    QCP_CONFIG=/etc/qiskit-classic-proxy/config.toml

# A fixed non-root UID/GID, so that Kubernetes' runAsNonRoot can check it and volumes can be chowned.
RUN groupadd --system --gid 10001 qcp \
 && useradd --system --uid 10001 --gid 10001 --no-create-home \
      --home-dir /var/lib/qiskit-classic-proxy --shell /usr/sbin/nologin qcp \
 && install -d -o 10001 -g 10001 -m 0750 /var/lib/qiskit-classic-proxy

# Install from the wheels of stage 1 only (no index), without copying them into a layer.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links=/wheels /wheels/qiskit_classic_proxy-*.whl

# Defaults for the container (absolute usage DB path on the volume). Replace the file by mounting
# your own at the same path (a ConfigMap, a bind mount); QCP_* env vars override its keys.
COPY deploy/docker/config.toml /etc/qiskit-classic-proxy/config.toml

# The usage record (SQLite) is the only thing the proxy writes: keep it on a volume so that the root
# filesystem can be read-only (docker run --read-only, readOnlyRootFilesystem: true).
WORKDIR /var/lib/qiskit-classic-proxy
VOLUME ["/var/lib/qiskit-classic-proxy"]
USER 10001:10001
EXPOSE 8080

# Liveness from inside the container with the stdlib (slim has no curl). Follows QCP_PORT, and
# speaks https (loopback, certificate not checked) when QCP_SSL_CERTFILE is set.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
  CMD ["python", "-c", "import os, ssl, urllib.request; tls = bool(os.environ.get('QCP_SSL_CERTFILE')); urllib.request.urlopen('%s://127.0.0.1:%s/healthz' % ('https' if tls else 'http', os.environ.get('QCP_PORT', '8080')), timeout=4, context=ssl._create_unverified_context() if tls else None)"]

ENTRYPOINT ["qiskit-classic-proxy"]
CMD ["serve", "--host", "0.0.0.0"]
