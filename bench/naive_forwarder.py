"""Reference point: the forwarder most people write first (FastAPI route + shared httpx client).

Same job as the proxy's hot path for the benchmarked route (rewrite the path, inject the bearer,
Service-CRN, IBM-API-Version and a request id), written the obvious way. Not used by the proxy.

    BENCH_UPSTREAM=http://127.0.0.1:9000/api BENCH_IAM=http://127.0.0.1:9000/identity/token \\
    BENCH_CRN=crn:... uvicorn naive_forwarder:app --app-dir bench
"""

from __future__ import annotations

import os
import uuid
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI, Request, Response

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


@app.api_route("/runtime/backends/{backend}/status", methods=["GET"])
async def backend_status(backend: str, request: Request) -> Response:
    client: httpx.AsyncClient = state["client"]  # type: ignore[assignment]
    headers = {k: v for k, v in request.headers.items() if k not in HOP}
    headers.update(
        {
            "authorization": f"Bearer {state['token']}",
            "service-crn": CRN,
            "ibm-api-version": "2026-04-15",
            "x-request-id": request.headers.get("x-request-id") or uuid.uuid4().hex,
        }
    )
    r = await client.get(f"{UPSTREAM}/v1/backends/{backend}/status", headers=headers, params=request.query_params)
    out = {k: v for k, v in r.headers.items() if k not in HOP and k != "content-encoding"}
    return Response(content=r.content, status_code=r.status_code, headers=out)
