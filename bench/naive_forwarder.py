"""Reference point: the forwarder most people write first (FastAPI route + shared httpx client).

Same job as the proxy's hot path for the benchmarked routes (rewrite the path, inject the bearer,
Service-CRN, IBM-API-Version and a request id; add hub/group/project to job answers and names to
the device list; drop hub/group/project/private from submissions; 410 for removed routes),
written the obvious way. Not used by the proxy.

    BENCH_UPSTREAM=http://127.0.0.1:9000/api BENCH_IAM=http://127.0.0.1:9000/identity/token \\
    BENCH_CRN=crn:... uvicorn naive_forwarder:app --app-dir bench
"""

from __future__ import annotations

import json
import os
import uuid
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

UPSTREAM = os.environ.get("BENCH_UPSTREAM", "http://127.0.0.1:9000/api")
IAM = os.environ.get("BENCH_IAM", "http://127.0.0.1:9000/identity/token")
CRN = os.environ.get("BENCH_CRN", "crn:v1:bluemix:public:quantum-computing:us-east:a/bench::")
HOP = {"connection", "keep-alive", "transfer-encoding", "te", "upgrade", "host", "content-length"}
state: dict[str, object] = {}


@asynccontextmanager
async def lifespan(app: FastAPI):  # type: ignore[no-untyped-def]
    client = httpx.AsyncClient(timeout=30)
    r = await client.post(IAM, data={"grant_type": "urn:ibm:params:oauth:grant-type:apikey", "apikey": "x"})
    state["client"], state["token"] = client, r.json()["access_token"]
    yield
    await client.aclose()


app = FastAPI(lifespan=lifespan)


HGP = {"hub": "ibm-q", "group": "open", "project": "main"}


def _headers(request: Request) -> dict[str, str]:
    headers = {k: v for k, v in request.headers.items() if k not in HOP}
    headers.update(
        {
            "authorization": f"Bearer {state['token']}",
            "service-crn": CRN,
            "ibm-api-version": "2026-04-15",
            "x-request-id": request.headers.get("x-request-id") or uuid.uuid4().hex,
        }
    )
    return headers


def _reply(r: httpx.Response, content: bytes | None = None) -> Response:
    out = {k: v for k, v in r.headers.items() if k not in HOP and k != "content-encoding"}
    return Response(content=r.content if content is None else content, status_code=r.status_code, headers=out)


@app.get("/runtime/health")
async def health() -> Response:
    return JSONResponse({"errors": [{"code": "endpoint_removed", "message": "GET /health was removed"}]}, 410)


@app.post("/runtime/jobs")
async def submit(request: Request) -> Response:
    client: httpx.AsyncClient = state["client"]  # type: ignore[assignment]
    doc = await request.json()
    for k in ("hub", "group", "project", "private"):
        doc.pop(k, None)
    r = await client.post(f"{UPSTREAM}/v1/jobs", headers=_headers(request), content=json.dumps(doc))
    return _reply(r, json.dumps({**r.json(), **HGP}).encode() if r.status_code < 300 else None)


@app.get("/runtime/jobs")
async def jobs(request: Request) -> Response:
    client: httpx.AsyncClient = state["client"]  # type: ignore[assignment]
    params = dict(request.query_params)
    params.setdefault("exclude_params", "true")
    r = await client.get(f"{UPSTREAM}/v1/jobs", headers=_headers(request), params=params)
    if r.status_code >= 300:
        return _reply(r)
    doc = r.json()
    doc["jobs"] = [{**j, **HGP, "status": j.get("state", {}).get("status")} for j in doc["jobs"]]
    return _reply(r, json.dumps(doc).encode())


@app.get("/runtime/jobs/{job_id}")
async def job(job_id: str, request: Request) -> Response:
    client: httpx.AsyncClient = state["client"]  # type: ignore[assignment]
    r = await client.get(f"{UPSTREAM}/v1/jobs/{job_id}", headers=_headers(request), params=request.query_params)
    if r.status_code >= 300:
        return _reply(r)
    doc = r.json()
    return _reply(r, json.dumps({**doc, **HGP, "status": doc.get("state", {}).get("status")}).encode())


@app.get("/runtime/backends")
async def backends(request: Request) -> Response:
    client: httpx.AsyncClient = state["client"]  # type: ignore[assignment]
    r = await client.get(f"{UPSTREAM}/v1/backends", headers=_headers(request))
    if r.status_code >= 300:
        return _reply(r)
    return _reply(r, json.dumps({"devices": [d["name"] for d in r.json()["devices"]]}).encode())


@app.api_route("/runtime/{path:path}", methods=["GET"])
async def passthrough(path: str, request: Request) -> Response:
    """Status, results, everything without a fix-up: rewrite and forward."""
    client: httpx.AsyncClient = state["client"]  # type: ignore[assignment]
    r = await client.get(f"{UPSTREAM}/v1/{path}", headers=_headers(request), params=request.query_params)
    return _reply(r)
