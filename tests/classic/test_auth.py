"""Logouts across replicas: a token logged out on one proxy is refused by every proxy on the database."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
import psycopg

from proxy.store import token_digest

from ..conftest import Running

TOKENS = ["app1=tok-app1-000000001"]


def login(p: Running) -> str:
    r = httpx.post(p.url + "/api/users/loginWithToken", json={"apiToken": "tok-app1-000000001"}, timeout=20)
    assert r.status_code == 200, r.text
    return str(r.json()["id"])


def backends(p: Running, access: str) -> int:
    return httpx.get(p.url + "/runtime/backends", headers={"X-Access-Token": access}, timeout=20).status_code


def test_a_logout_on_one_replica_is_refused_by_the_other(make_proxy: Callable[..., Running], pg_url: str) -> None:
    a = make_proxy(usage_db=pg_url, client_tokens=TOKENS)
    b = make_proxy(usage_db=pg_url, client_tokens=TOKENS)
    access = login(a)
    assert backends(b, access) == 200  # signed, not stored: any replica accepts it
    assert httpx.post(a.url + "/api/logout", headers={"X-Access-Token": access}, timeout=20).status_code == 204
    assert backends(a, access) == 401  # at once where it was logged out
    status, deadline = 200, time.monotonic() + 10
    while status == 200 and time.monotonic() < deadline:  # the other one's sync round (each second)
        status = backends(b, access)
        time.sleep(0.05)
    assert status == 401
    with psycopg.connect(pg_url) as conn:
        stored = [r[0] for r in conn.execute("SELECT token_hash FROM qcp_revocations")]
    assert stored == [token_digest(access)] and access not in str(stored)
    # A replica started later (or restarted) knows the logout from the database.
    c = make_proxy(usage_db=pg_url, client_tokens=TOKENS)
    assert backends(c, access) == 401
    assert backends(c, login(c)) == 200  # a new login still works


def test_a_logout_of_a_foreign_token_writes_nothing(make_proxy: Callable[..., Running], pg_url: str) -> None:
    a = make_proxy(usage_db=pg_url)  # no client tokens: the logout handler sees any header
    r = httpx.post(a.url + "/api/logout", headers={"X-Access-Token": "qcp1.forged.token"}, timeout=20)
    assert r.status_code == 204
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT count(*) FROM qcp_revocations").fetchone()[0] == 0
