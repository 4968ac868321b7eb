"""Sessions over HTTP (lua/handlers/sessions.lua, jollyjet.session): create
sets an HttpOnly SameSite=Lax cookie and never echoes the id; /me reads the
session on any worker; DELETE forgets it; Secure follows the policy; while
Redis is down the session routes answer 503 and the rest of the API does
not notice."""
import http.client
import json
import os
import re

from harness import Engine, Redis, Runner, wait_until

SID_RE = re.compile(r"^sid=([A-Za-z0-9_-]{43}); Path=/; HttpOnly; SameSite=Lax$")
ISO_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def req(e, method, path, body=None, headers=None):
    """One request on a fresh connection: (status, lower-case headers, parsed JSON or None)."""
    c = http.client.HTTPConnection("127.0.0.1", e.port, timeout=10)
    try:
        hdrs = dict(headers or {})
        if body is not None and not isinstance(body, (bytes, str)):
            body = json.dumps(body)
            hdrs.setdefault("Content-Type", "application/json")
        c.request(method, path, body=body, headers=hdrs)
        r = c.getresponse()
        data = r.read()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, (json.loads(data) if data else None)
    finally:
        c.close()


def cookie(sid):
    return {"Cookie": "sid=" + sid}


def create(e, body=None):
    st, hdrs, doc = req(e, "POST", "/api/sessions", body)
    assert st == 201, (st, doc)
    m = SID_RE.match(hdrs["set-cookie"])
    assert m, hdrs["set-cookie"]
    return m.group(1), hdrs, doc


def expect_error(resp, status, code):
    st, hdrs, doc = resp
    assert st == status, (st, doc)
    assert hdrs["content-type"] == "application/json", hdrs
    assert doc["success"] is False and doc["error"] == code and doc["message"], doc
    return hdrs, doc


# ---------------------------------------------------------------- one engine

def test_create_sets_the_cookie_and_never_echoes_the_id(e, r):
    sid, hdrs, doc = create(e, {"userId": "u-42", "data": {"theme": "dark", "n": 3}})
    assert "Secure" not in hdrs["set-cookie"]           # not configured by default
    assert hdrs["cache-control"] == "no-store"
    assert hdrs["location"] == "/api/sessions/me"
    assert set(doc) == {"userId", "data", "createdAt", "expiresAt"}, doc
    assert doc["userId"] == "u-42" and doc["data"] == {"theme": "dark", "n": 3}
    assert ISO_RE.match(doc["createdAt"]) and ISO_RE.match(doc["expiresAt"]), doc
    assert sid not in json.dumps(doc)
    # stored server-side under the prefix, with the policy's 24 h TTL
    key = f"{e.env['REDIS_KEY_PREFIX']}sess:{sid}"
    ttl = int(r.command("PTTL", key).split(b"\r\n")[0][1:])
    assert 86_390_000 < ttl <= 86_400_000, ttl


def test_me_reads_the_session_on_every_worker(e, r):
    sid, _, _ = create(e, {"data": {"cart": ["p-0001"]}})
    for _ in range(6):   # fresh connections: SO_REUSEPORT spreads them over both workers
        st, hdrs, doc = req(e, "GET", "/api/sessions/me", headers=cookie(sid))
        assert st == 200, (st, doc)
        assert doc["userId"] is None and doc["data"] == {"cart": ["p-0001"]}, doc
        assert "id" not in doc and sid not in json.dumps(doc)
        assert hdrs["cache-control"] == "no-store"
        assert "set-cookie" not in hdrs


def test_create_without_a_body(e, r):
    sid, _, doc = create(e)
    assert doc["userId"] is None and doc["data"] == {}, doc
    assert req(e, "GET", "/api/sessions/me", headers=cookie(sid))[0] == 200


def test_delete_then_me_is_401(e, r):
    sid, _, _ = create(e, {"userId": "u-7"})
    assert req(e, "GET", "/api/sessions/me", headers=cookie(sid))[0] == 200
    st, hdrs, doc = req(e, "DELETE", "/api/sessions/me", headers=cookie(sid))
    assert st == 204 and doc is None, (st, doc)
    assert hdrs["set-cookie"].startswith("sid=;") and "Max-Age=0" in hdrs["set-cookie"], hdrs
    expect_error(req(e, "GET", "/api/sessions/me", headers=cookie(sid)), 401, "no_session")
    # deleting again (or without a session) is still 204
    assert req(e, "DELETE", "/api/sessions/me", headers=cookie(sid))[0] == 204
    assert req(e, "DELETE", "/api/sessions/me")[0] == 204


def test_me_without_or_with_a_bad_cookie_is_401(e, r):
    expect_error(req(e, "GET", "/api/sessions/me"), 401, "no_session")
    expect_error(req(e, "GET", "/api/sessions/me", headers={"Cookie": "sid=short"}), 401, "no_session")
    unknown = "A" * 43
    expect_error(req(e, "GET", "/api/sessions/me", headers=cookie(unknown)), 401, "no_session")


def test_a_new_session_replaces_the_callers_old_one(e, r):
    old, _, _ = create(e)
    st, hdrs, _ = req(e, "POST", "/api/sessions", headers=cookie(old))
    assert st == 201
    new = SID_RE.match(hdrs["set-cookie"]).group(1)
    assert new != old
    expect_error(req(e, "GET", "/api/sessions/me", headers=cookie(old)), 401, "no_session")
    assert req(e, "GET", "/api/sessions/me", headers=cookie(new))[0] == 200


def test_bad_bodies_are_400(e, r):
    expect_error(req(e, "POST", "/api/sessions", "{nope"), 400, "invalid_json")
    expect_error(req(e, "POST", "/api/sessions", [1, 2]), 400, "validation_failed")
    expect_error(req(e, "POST", "/api/sessions", {"user": "x"}), 400, "validation_failed")
    expect_error(req(e, "POST", "/api/sessions", {"userId": 5}), 400, "validation_failed")
    expect_error(req(e, "POST", "/api/sessions", {"userId": ""}), 400, "validation_failed")
    expect_error(req(e, "POST", "/api/sessions", {"data": [1]}), 400, "validation_failed")
    expect_error(req(e, "POST", "/api/sessions", {"data": "x"}), 400, "validation_failed")
    _, doc = expect_error(req(e, "POST", "/api/sessions", {"data": {"big": "x" * 5000}}), 400,
                          "validation_failed")
    assert doc["details"][0]["field"] == "data", doc


# ------------------------------------------------------ engines of their own

def test_secure_flag_follows_the_policy():
    r = Redis()
    e = Engine(r.port, workers=1, start=False)
    try:
        path = os.path.join(e.policy_dir, "sessions.lua")
        with open(path) as f:
            text = f.read()
        assert "secure = false" in text
        with open(path, "w") as f:
            f.write(text.replace("secure = false", "secure = true").replace('same_site = "Lax"',
                                                                              'same_site = "Strict"'))
        e.start()
        st, hdrs, _ = req(e, "POST", "/api/sessions")
        assert st == 201
        assert re.match(r"^sid=[A-Za-z0-9_-]{43}; Path=/; HttpOnly; SameSite=Strict; Secure$",
                        hdrs["set-cookie"]), hdrs["set-cookie"]
        assert e.stop() == 0
    finally:
        e.close()
        r.close()


def test_redis_down_session_routes_503_rest_unaffected():
    r = Redis()
    e = Engine(r.port, workers=2)
    try:
        def health_all(n=8):
            return [req(e, "GET", "/health")[2] for _ in range(n)]

        wait_until(lambda: all(h["redis"]["status"] == "up" for h in health_all()), 5, what="redis up")
        sid, _, _ = create(e, {"userId": "u-1"})
        assert req(e, "GET", "/api/products/p-0001")[0] == 200   # warm nothing in particular

        r.stop()
        wait_until(lambda: all(h["redis"]["status"] == "down" for h in health_all()), 5,
                   what="redis down on every worker")
        for _ in range(4):   # both workers
            hdrs, doc = expect_error(req(e, "POST", "/api/sessions", {"data": {"a": 1}}), 503,
                                     "sessions_unavailable")
            assert "set-cookie" not in hdrs
            assert hdrs.get("retry-after") == "1"
            expect_error(req(e, "GET", "/api/sessions/me", headers=cookie(sid)), 503, "sessions_unavailable")
            expect_error(req(e, "DELETE", "/api/sessions/me", headers=cookie(sid)), 503,
                         "sessions_unavailable")
            st, _, doc = req(e, "GET", "/health")
            assert st == 200 and doc["status"] == "degraded", (st, doc)
            st, _, doc = req(e, "GET", "/api/products/p-0001")
            assert st == 200 and doc["id"] == "p-0001", (st, doc)

        r.start()   # an empty Redis (no persistence): the old session is gone
        wait_until(lambda: all(h["redis"]["status"] == "up" for h in health_all()), 5, what="redis back")
        expect_error(req(e, "GET", "/api/sessions/me", headers=cookie(sid)), 401, "no_session")
        sid2, _, _ = create(e)
        assert req(e, "GET", "/api/sessions/me", headers=cookie(sid2))[0] == 200
        assert e.stop() == 0
    finally:
        e.close()
        r.close()


def main():
    t = Runner()
    r = Redis()
    e = Engine(r.port, workers=2)
    try:
        t.run_all(globals(), e, r)
        assert e.stop() == 0
    finally:
        e.close()
        r.close()
    t.run_all(globals())
    t.done()


if __name__ == "__main__":
    main()
