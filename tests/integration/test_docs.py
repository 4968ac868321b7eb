"""GET /openapi.json, GET /docs and GET /dashboard over HTTP: content types,
ETag / If-None-Match, Cache-Control, Content-Security-Policy (hashes that
match the inline script and style actually served), no external resource,
every documented path on the HTML page; and real answers of the running
engine checked against the document's own schemas and headers, so the
document cannot drift from what the routes do."""
import base64
import hashlib
import json
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

CONTRACT = [
    "GET /health", "GET /health/live", "GET /health/ready", "GET /metrics", "GET /api/cache/metrics",
    "GET /api/products", "POST /api/products", "GET /api/products/{id}", "PUT /api/products/{id}",
    "PATCH /api/products/{id}", "DELETE /api/products/{id}", "POST /api/products/{id}/wishlist",
    "GET /api/wishlist", "POST /api/sessions", "GET /api/sessions/me", "DELETE /api/sessions/me",
    "GET /api/cache/stats", "DELETE /api/cache", "DELETE /api/cache/tags/{tag}", "GET /api/cache/keys",
    "GET /api/cache/keys/{key}", "DELETE /api/cache/keys/{key}", "GET /api/admin/ratelimit/{rule}/{key}",
    "DELETE /api/admin/ratelimit/{rule}/{key}", "POST /api/admin/reload",
    "GET /openapi.json", "GET /docs", "GET /dashboard",
]

# src= / href= / url(...) / @import that leave the origin (http:, https:, protocol-relative //)
EXTERNAL = re.compile(r"""(?:\b(?:src|href|action|srcset|poster|data)\s*=\s*["']?\s*(?:https?:)?//)"""
                      r"""|(?:url\(\s*["']?\s*(?:https?:)?//)|(?:@import)""", re.I)


def lower(headers):
    return {k.lower(): v for k, v in headers.items()}


def csp_directives(value):
    out = {}
    for part in value.split(";"):
        words = part.split()
        if words:
            out[words[0].lower()] = words[1:]
    return out


def sha256_source(text):
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


def inline(html, tag):
    html = re.sub(r"<!--.*?-->", "", html, flags=re.S)
    return re.findall(rf"<{tag}\b[^>]*>(.*?)</{tag}>", html, flags=re.S)


# ----------------------------------------------------------------- a small JSON Schema check
# The subset the document uses: $ref, type, const, enum, required, properties,
# additionalProperties, items, allOf, min/max, minLength/maxLength, pattern,
# maxItems, maxProperties.

def resolve(doc, ref):
    node = doc
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def type_ok(v, t):
    return {
        "object": isinstance(v, dict), "array": isinstance(v, list), "string": isinstance(v, str),
        "boolean": isinstance(v, bool), "null": v is None,
        "integer": isinstance(v, int) and not isinstance(v, bool),
        "number": isinstance(v, (int, float)) and not isinstance(v, bool),
    }[t]


def check(doc, v, s, where="$"):
    errs = []
    if "$ref" in s:
        return check(doc, v, resolve(doc, s["$ref"]), where)
    for sub in s.get("allOf", []):
        errs += check(doc, v, sub, where)
    if "type" in s:
        types = s["type"] if isinstance(s["type"], list) else [s["type"]]
        if not any(type_ok(v, t) for t in types):
            return errs + [f"{where}: {v!r} is not {s['type']}"]
    if "const" in s and v != s["const"]:
        errs.append(f"{where}: {v!r} != const {s['const']!r}")
    if "enum" in s and v not in s["enum"]:
        errs.append(f"{where}: {v!r} not in {s['enum']}")
    if isinstance(v, str):
        if len(v) < s.get("minLength", 0) or len(v) > s.get("maxLength", 1 << 62):
            errs.append(f"{where}: length {len(v)} out of range")
        if "pattern" in s and not re.search(s["pattern"], v):
            errs.append(f"{where}: {v!r} does not match {s['pattern']}")
    if type_ok(v, "number"):
        if v < s.get("minimum", float("-inf")) or v > s.get("maximum", float("inf")):
            errs.append(f"{where}: {v} out of range")
    if isinstance(v, dict):
        for k in s.get("required", []):
            if k not in v:
                errs.append(f"{where}: missing {k}")
        props = s.get("properties", {})
        for k, item in v.items():
            if k in props:
                errs += check(doc, item, props[k], f"{where}.{k}")
            elif s.get("additionalProperties") is False:
                errs.append(f"{where}: unexpected field {k}")
            elif isinstance(s.get("additionalProperties"), dict):
                errs += check(doc, item, s["additionalProperties"], f"{where}.{k}")
        if len(v) > s.get("maxProperties", 1 << 62):
            errs.append(f"{where}: too many fields")
    if isinstance(v, list):
        if len(v) > s.get("maxItems", 1 << 62):
            errs.append(f"{where}: too many items")
        for i, item in enumerate(v):
            if "items" in s:
                errs += check(doc, item, s["items"], f"{where}[{i}]")
    return errs


def deref(doc, node):
    while isinstance(node, dict) and "$ref" in node:
        node = resolve(doc, node["$ref"])
    return node


def conforms(doc, engine, method, path, template, status, body=None, headers=None):
    """Sends the request and checks the answer against the documented response
    of (method, template): status documented, JSON body valid, documented
    enum headers valid. Returns (headers, parsed body)."""
    data = json.dumps(body) if isinstance(body, (dict, list)) else body
    hdrs = dict(headers or {})
    if data is not None:
        hdrs.setdefault("Content-Type", "application/json")
    st, h, raw = engine.request(method, path, body=data, headers=hdrs)
    h = lower(h)
    assert st == status, (method, path, st, raw[:300])
    op = doc["paths"][template][method.lower()]
    resp = deref(doc, op["responses"].get(str(st)) or op["responses"]["default"])
    parsed = None
    if raw:
        media = resp.get("content", {})
        assert media, f"{method} {template} {st}: a body was sent but none is documented"
        ctype = h.get("content-type", "")
        if ctype.startswith("application/json"):
            assert "application/json" in media, (template, st, list(media))
            parsed = json.loads(raw)
            errs = check(doc, parsed, media["application/json"]["schema"])
            assert not errs, f"{method} {path} {st} does not match the document:\n" + "\n".join(errs)
    for name, hdr in resp.get("headers", {}).items():
        hs = deref(doc, hdr).get("schema", {})
        value = h.get(name.lower())
        if value is not None and "enum" in hs:
            assert value in hs["enum"], f"{method} {path}: {name}: {value!r} not in {hs['enum']}"
    # headers the engine sends on every answer are documented on every response
    assert "X-Request-Id" in resp.get("headers", {}), (method, template, st)
    return h, parsed


# ----------------------------------------------------------------- tests

def test_openapi_json_is_served_with_etag_and_cache_control(e):
    st, h, raw = e.get("/openapi.json")
    h = lower(h)
    assert st == 200 and h["content-type"] == "application/json", (st, h)
    assert h.get("cache-control") and "max-age" in h["cache-control"], h
    etag = h["etag"]
    assert re.fullmatch(r'"[0-9a-f]{16}-[0-9a-f]+"', etag), etag
    doc = json.loads(raw)
    assert re.fullmatch(r"3\.1\.\d+", doc["openapi"]), doc["openapi"]
    _, _, health = e.json("GET", "/health")
    assert doc["info"]["version"] == health["version"] and doc["info"]["title"]
    # the same bytes (so the same ETag) from every worker
    tags = {lower(e.get("/openapi.json")[1])["etag"] for _ in range(8)}
    assert tags == {etag}, tags
    st, h2, raw2 = e.get("/openapi.json", headers={"If-None-Match": etag})
    assert st == 304 and raw2 == b"" and lower(h2)["etag"] == etag, (st, h2)
    st, _, raw3 = e.get("/openapi.json", headers={"If-None-Match": '"nope"'})
    assert st == 200 and raw3 == raw
    st, h4, raw4 = e.request("HEAD", "/openapi.json")
    assert st == 200 and raw4 == b"" and lower(h4)["etag"] == etag
    st, h5, _ = e.request("POST", "/openapi.json", body="{}")
    assert st == 405 and lower(h5)["allow"] == "GET, HEAD", (st, h5)


def test_the_document_lists_every_route_of_the_contract(e):
    doc = json.loads(e.get("/openapi.json")[2])
    ops = {f"{m.upper()} {p}" for p, item in doc["paths"].items() for m in item if m != "parameters"}
    assert set(CONTRACT) <= ops, sorted(set(CONTRACT) - ops)
    assert ops <= set(CONTRACT), sorted(ops - set(CONTRACT))
    ids = [item[m]["operationId"] for item in doc["paths"].values() for m in item if m != "parameters"]
    assert len(ids) == len(set(ids))


def test_answers_of_the_engine_match_the_document(e):
    doc = json.loads(e.get("/openapi.json")[2])
    conforms(doc, e, "GET", "/health", "/health", 200)
    h, _ = conforms(doc, e, "GET", "/api/products/p-0001", "/api/products/{id}", 200)
    assert h["x-cache"] in ("HIT", "MISS")
    h, _ = conforms(doc, e, "GET", "/api/products/p-0001", "/api/products/{id}", 200)
    assert h["x-cache"] == "HIT" and "age" in h, h
    conforms(doc, e, "GET", "/api/products/p-9999", "/api/products/{id}", 404)
    h, _ = conforms(doc, e, "GET", "/api/products?limit=3&category=books", "/api/products", 200)
    assert "etag" in h and h["x-cache"] in ("HIT", "MISS", "STALE", "BYPASS"), h
    st, h304, _ = e.get("/api/products?limit=3&category=books", headers={"If-None-Match": h["etag"]})
    assert st == 304, st
    conforms(doc, e, "GET", "/api/products?limit=3", "/api/products", 200, headers={"Cache-Control": "no-cache"})
    conforms(doc, e, "GET", "/api/products?limit=0", "/api/products", 400)
    conforms(doc, e, "POST", "/api/products", "/api/products", 400, body={"price": 1.005, "id": "x", "bogus": 1})
    conforms(doc, e, "POST", "/api/products", "/api/products", 400, body="{not json")
    conforms(doc, e, "POST", "/api/products", "/api/products", 400, body="[1]")
    _, created = conforms(doc, e, "POST", "/api/products", "/api/products", 201,
                          body={"name": "Doc Kettle", "price": 12.5, "category": "docs",
                                "images": ["https://img.example/k.png"]})
    pid = created["id"]
    conforms(doc, e, "PATCH", f"/api/products/{pid}", "/api/products/{id}", 200, body={"stock": 4})
    conforms(doc, e, "PUT", f"/api/products/{pid}", "/api/products/{id}", 200, body={"price": 13})
    conforms(doc, e, "PUT", f"/api/products/{pid}", "/api/products/{id}", 400, body={"stock": -1})
    h, _ = conforms(doc, e, "POST", f"/api/products/{pid}/wishlist", "/api/products/{id}/wishlist", 200)
    sid = re.match(r"sid=([^;]+)", h["set-cookie"]).group(1)
    conforms(doc, e, "GET", "/api/wishlist", "/api/wishlist", 200, headers={"Cookie": f"sid={sid}"})
    conforms(doc, e, "GET", "/api/wishlist", "/api/wishlist", 200)
    conforms(doc, e, "DELETE", f"/api/products/{pid}", "/api/products/{id}", 204)
    conforms(doc, e, "DELETE", f"/api/products/{pid}", "/api/products/{id}", 404)
    h, _ = conforms(doc, e, "POST", "/api/sessions", "/api/sessions", 201, body={"userId": "u-1", "data": {"a": 1}})
    cookie = h["set-cookie"].split(";")[0]
    conforms(doc, e, "POST", "/api/sessions", "/api/sessions", 400, body={"userId": ""})
    conforms(doc, e, "GET", "/api/sessions/me", "/api/sessions/me", 200, headers={"Cookie": cookie})
    conforms(doc, e, "DELETE", "/api/sessions/me", "/api/sessions/me", 204, headers={"Cookie": cookie})
    conforms(doc, e, "GET", "/api/sessions/me", "/api/sessions/me", 401, headers={"Cookie": cookie})
    conforms(doc, e, "GET", "/api/cache/metrics", "/api/cache/metrics", 200)
    big = "x" * (int(e.env.get("MAX_BODY_BYTES", 1 << 20)) + 1)
    conforms(doc, e, "POST", "/api/products", "/api/products", 413, body=big)
    # the documented error shape of an unmatched path
    st, _, body = e.json("GET", "/no/such/path")
    assert st == 404 and not check(doc, body, doc["components"]["schemas"]["Error"]), body


TOKEN = "docs-test-admin-token-0123456789"


def test_probe_and_admin_answers_match_the_document(e):
    doc = json.loads(e.get("/openapi.json")[2])
    for path in ("/health/live", "/health/ready"):
        if path in doc["paths"] and e.get(path)[0] != 404:   # routes of the admin branch
            conforms(doc, e, "GET", path, path, 200)
    if e.get("/api/cache/stats")[0] == 404 and "admin" not in e.get("/api/cache/stats")[2].decode():
        print("    NOTE: no admin API in this tree")
        return
    auth = {"Authorization": f"Bearer {TOKEN}"}
    h, _ = conforms(doc, e, "GET", "/api/cache/stats", "/api/cache/stats", 401)
    assert h["www-authenticate"].startswith("Bearer"), h
    conforms(doc, e, "GET", "/api/cache/stats", "/api/cache/stats", 200, headers=auth)
    e.get("/api/products/p-0003")
    _, page = conforms(doc, e, "GET", "/api/cache/keys?prefix=product:&count=1000", "/api/cache/keys", 200,
                       headers=auth)
    conforms(doc, e, "GET", "/api/cache/keys?count=0", "/api/cache/keys", 400, headers=auth)
    conforms(doc, e, "GET", "/api/cache/keys/product:p-0003", "/api/cache/keys/{key}", 200, headers=auth)
    conforms(doc, e, "GET", "/api/cache/keys/nokey", "/api/cache/keys/{key}", 400, headers=auth)
    conforms(doc, e, "GET", "/api/cache/keys/product:p-9998", "/api/cache/keys/{key}", 404, headers=auth)
    conforms(doc, e, "DELETE", "/api/cache/keys/product:p-0003", "/api/cache/keys/{key}", 200, headers=auth)
    conforms(doc, e, "DELETE", "/api/cache/tags/products", "/api/cache/tags/{tag}", 200, headers=auth)
    conforms(doc, e, "GET", "/api/admin/ratelimit/default/ip:127.0.0.1", "/api/admin/ratelimit/{rule}/{key}", 200,
             headers=auth)
    conforms(doc, e, "GET", "/api/admin/ratelimit/nope/ip:127.0.0.1", "/api/admin/ratelimit/{rule}/{key}", 404,
             headers=auth)
    conforms(doc, e, "GET", "/api/admin/ratelimit/default/bogus", "/api/admin/ratelimit/{rule}/{key}", 400,
             headers=auth)
    conforms(doc, e, "DELETE", "/api/admin/ratelimit/default/ip:127.0.0.1", "/api/admin/ratelimit/{rule}/{key}",
             200, headers=auth)
    conforms(doc, e, "DELETE", "/api/cache", "/api/cache", 200, headers=auth)
    gen = e.json("GET", "/health")[2]["policies"]["generation"]
    conforms(doc, e, "POST", "/api/admin/reload", "/api/admin/reload", 202, headers=auth)
    harness.wait_until(lambda: all(e.json("GET", "/health")[2]["policies"]["generation"] > gen for _ in range(4)),
                       20, 0.1, "the reload")
    assert page["keys"] is not None


def test_admin_disabled_answers_match_the_document(plain):
    doc = json.loads(plain.get("/openapi.json")[2])
    _, body = conforms(doc, plain, "GET", "/api/cache/stats", "/api/cache/stats", 404)
    assert body["error"] == "not_found", body


def test_ratelimited_answers_match_the_document(limited):
    doc = json.loads(limited.get("/openapi.json")[2])
    h, _ = conforms(doc, limited, "GET", "/api/products/p-0002", "/api/products/{id}", 200)
    for name in ("ratelimit-policy", "ratelimit", "x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset"):
        assert name in h, (name, h)
    documented = {k.lower() for k in doc["paths"]["/api/products/{id}"]["get"]["responses"]["200"]["headers"]}
    assert {"ratelimit-policy", "ratelimit", "x-ratelimit-remaining"} <= documented, documented
    for _ in range(3):
        limited.get("/api/products/p-0002")
    h, body = conforms(doc, limited, "GET", "/api/products/p-0002", "/api/products/{id}", 429)
    assert body["error"] == "Rate limit exceeded" and body["retryAfter"] >= 1 and "retry-after" in h, (h, body)


def test_docs_page_is_self_contained_and_mentions_every_path(e):
    st, h, raw = e.get("/docs")
    h = lower(h)
    assert st == 200 and h["content-type"].startswith("text/html"), (st, h)
    html = raw.decode("utf-8")
    csp = csp_directives(h["content-security-policy"])
    assert csp["default-src"] == ["'self'"], csp
    assert csp["script-src"] == ["'none'"], csp
    assert "'unsafe-inline'" not in h["content-security-policy"]
    assert csp["style-src"] == [sha256_source(s) for s in inline(html, "style")], (csp, len(inline(html, "style")))
    assert csp["frame-ancestors"] == ["'none'"] and csp["object-src"] == ["'none'"]
    assert not EXTERNAL.search(html), EXTERNAL.search(html).group(0)
    assert "<script" not in html and "<link" not in html and "<iframe" not in html
    doc = json.loads(e.get("/openapi.json")[2])
    for path, item in doc["paths"].items():
        shown = path.replace("&", "&amp;")
        assert f">{shown}<" in html, f"/docs does not show {path}"
        for method in item:
            if method != "parameters":
                assert f'id="op-{item[method]["operationId"]}"' in html, (method, path)
    for name in doc["components"]["schemas"]:
        assert f'id="schema-{name}"' in html, name
    for needle in ("X-Cache", "RateLimit-Policy", "X-RateLimit-Remaining", "Retry-After", "If-None-Match",
                   "adminBearer", "sessionCookie", "X-Request-Id", "validation_failed", "Rate limit exceeded"):
        assert needle in html, needle
    etag = h["etag"]
    st, h2, raw2 = e.get("/docs", headers={"If-None-Match": etag})
    assert st == 304 and raw2 == b"", st
    assert lower(h2)["etag"] == etag


def test_dashboard_page_is_the_static_file_with_a_strict_csp(e):
    st, h, raw = e.get("/dashboard")
    h = lower(h)
    assert st == 200 and h["content-type"].startswith("text/html"), (st, h)
    with open(os.path.join(harness.SRC, "lua", "static", "dashboard.html"), "rb") as f:
        assert raw == f.read(), "GET /dashboard is not lua/static/dashboard.html"
    html = raw.decode("utf-8")
    csp = csp_directives(h["content-security-policy"])
    scripts, styles = inline(html, "script"), inline(html, "style")
    assert len(scripts) == 1 and len(styles) == 1
    assert csp["default-src"] == ["'self'"]
    assert csp["script-src"] == [sha256_source(scripts[0])], csp
    assert csp["style-src"] == [sha256_source(styles[0])], csp
    assert csp["connect-src"] == ["'self'"], csp
    assert "'unsafe-inline'" not in h["content-security-policy"] and "'unsafe-eval'" not in h["content-security-policy"]
    assert not EXTERNAL.search(html), EXTERNAL.search(html).group(0)
    assert not re.search(r"\bstyle\s*=", html), "inline style attributes would be blocked by the CSP"
    for wanted in ('"/metrics"', '"/health"', "jollyjet_http_requests_total", "jollyjet_cache_hits_total",
                   "jollyjet_cache_misses_total", "jollyjet_ratelimit_rejected_total",
                   "jollyjet_http_request_duration_seconds_bucket", "<canvas"):
        assert wanted in html, wanted
    st, _, _ = e.get("/dashboard", headers={"If-None-Match": h["etag"]})
    assert st == 304


LIMITS = """return {
  rules = {
    { name = "docs_test", limit = 3, period = 60, route = "/api/products/{id}", methods = { "GET" }, key = "ip" },
  },
}
"""


if __name__ == "__main__":
    runner = harness.Runner()
    redis = harness.Redis()
    engine = limited = None
    try:
        engine = harness.Engine(redis.port, workers=2, env={"ADMIN_TOKEN": TOKEN})
        runner.run_all({k: v for k, v in globals().items()
                        if k not in ("test_ratelimited_answers_match_the_document",
                                     "test_admin_disabled_answers_match_the_document")}, engine)
        limited = harness.Engine(redis.port, workers=1, env={"RATELIMIT_ENABLED": "true"}, start=False)
        with open(os.path.join(limited.policy_dir, "ratelimits.lua"), "w") as f:
            f.write(LIMITS)
        limited.start()
        runner.run("ratelimited answers match the document", test_ratelimited_answers_match_the_document, limited)
        runner.run("admin disabled answers match the document", test_admin_disabled_answers_match_the_document,
                   limited)
    finally:
        for eng in (engine, limited):
            if eng:
                eng.close()
        redis.close()
    runner.done()
