"""Response-cache middleware over HTTP (policies/response_cache.lua): list
pages MISS then HIT with Age, ETag and 304, no-cache bypass that replaces the
entry, one entry for any order of the query, writes that invalidate cached
pages (through policies/invalidation.lua), policy edits that take effect on
reload, and an invalid policy rejected with file:line in /health."""
import http.client
import json
import os
import time

from harness import Engine, Redis, Runner, db_sql, wait_until


def req(e, method, path, body=None, headers=None):
    """One request on a fresh connection: (status, headers with lower-case names, raw body)."""
    c = http.client.HTTPConnection("127.0.0.1", e.port, timeout=10)
    try:
        hdrs = dict(headers or {})
        if body is not None and not isinstance(body, (bytes, str)):
            body = json.dumps(body)
            hdrs.setdefault("Content-Type", "application/json")
        c.request(method, path, body=body, headers=hdrs)
        r = c.getresponse()
        data = r.read()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, data
    finally:
        c.close()


def get(e, path, headers=None):
    return req(e, "GET", path, headers=headers)


def create(e, **fields):
    body = {"name": "RC Kettle", "price": 9.5, "category": "rc"}
    body.update(fields)
    st, _, data = req(e, "POST", "/api/products", body)
    assert st == 201, (st, data)
    return json.loads(data)


def write_policy(e, name, text):
    path = os.path.join(e.policy_dir, name)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def reload_error(e):
    return e.json("GET", "/health")[2]["policies"]["last_reload_error"]


def every_worker(e, pred, n=8):
    """pred holds for n requests on fresh connections (spread over the workers)."""
    return all(pred() for _ in range(n))


SHIPPED = open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "policies",
                            "response_cache.lua")).read()


# ------------------------------------------------------------------ hits and misses

def test_list_page_miss_then_hit_with_age(e):
    create(e, category="rc-hit")
    path = "/api/products?category=rc-hit&limit=5"
    st, h1, b1 = get(e, path)
    assert st == 200 and h1["x-cache"] == "MISS" and "age" not in h1, h1
    assert h1["etag"].startswith('"') and h1["content-type"] == "application/json", h1
    st, h2, b2 = get(e, path)
    assert st == 200 and h2["x-cache"] == "HIT" and int(h2["age"]) >= 0, h2
    assert b2 == b1 and h2["etag"] == h1["etag"] and h2["content-type"] == "application/json"
    assert "x-request-id" in h2 and h2["x-request-id"] != h1["x-request-id"]   # not replayed
    time.sleep(1.2)
    st, h3, b3 = get(e, path)
    assert h3["x-cache"] == "HIT" and int(h3["age"]) >= 1 and b3 == b1, h3


def test_head_is_served_too(e):
    path = "/api/products?category=rc-hit&limit=4"
    st, h1, body = req(e, "HEAD", path)
    assert st == 200 and body == b"" and "etag" in h1 and int(h1["content-length"]) > 10, h1
    st, h2, body = req(e, "HEAD", path)
    assert st == 200 and body == b"" and h2["x-cache"] == "HIT" and "age" in h2, h2
    assert h2["content-length"] == h1["content-length"] and h2["etag"] == h1["etag"]
    # GET and HEAD are separate entries; the representation (ETag) is the same
    st, h3, b3 = get(e, path)
    assert st == 200 and h3["etag"] == h1["etag"] and len(b3) == int(h1["content-length"])


def test_query_order_does_not_matter(e):
    st, h1, b1 = get(e, "/api/products?category=rc-sort&limit=3&page=1")
    assert h1["x-cache"] == "MISS", h1
    st, h2, b2 = get(e, "/api/products?page=1&limit=3&category=rc-sort")
    assert h2["x-cache"] == "HIT" and "age" in h2 and b2 == b1, h2
    st, h3, _ = get(e, "/api/products?limit=3&category=rc-sort")    # a different query: its own entry
    assert "age" not in h3, h3


def test_product_routes_are_not_cached_by_the_middleware(e):
    for _ in range(2):
        st, hdrs, _ = get(e, "/api/products/p-0001")
        # no ETag: the middleware did not touch it (Age, if any, is the product cache's own)
        assert st == 200 and "etag" not in hdrs, hdrs
        assert hdrs["x-cache"] in ("MISS", "HIT", "L1"), hdrs
    st, hdrs, _ = get(e, "/api/wishlist")
    assert st == 200 and "etag" not in hdrs, hdrs


# ------------------------------------------------------------------ validators

def test_etag_and_304(e):
    path = "/api/products?category=rc-etag&limit=2"
    create(e, category="rc-etag")
    st, hdrs, body = get(e, path)
    etag = hdrs["etag"]
    for inm in (etag, "W/" + etag, '"nope", ' + etag, "*"):
        st, h, b = get(e, path, {"If-None-Match": inm})
        assert st == 304 and b == b"" and h["etag"] == etag, (inm, st, h)
        assert "content-length" not in h and h["x-cache"] == "HIT", h
    st, h, b = get(e, path, {"If-None-Match": '"something-else"'})
    assert st == 200 and b == body and h["etag"] == etag
    # a changed body has a changed ETag: the old one no longer matches
    p = create(e, category="rc-etag")
    st, h, b = get(e, path, {"If-None-Match": etag})
    assert st == 200 and h["etag"] != etag and p["id"].encode() in b, (st, h)


# ------------------------------------------------------------------ bypass

def test_no_cache_bypasses_and_replaces_the_entry(e):
    p = create(e, category="rc-bypass", name="Before Lamp")
    path = "/api/products?category=rc-bypass"
    get(e, path)
    st, h, b = get(e, path)
    assert h["x-cache"] == "HIT" and b"Before Lamp" in b
    # change the row behind the engine's back: nothing is invalidated
    db_sql(e, "UPDATE products SET name = 'After Lamp' WHERE id = ?", (p["id"],))
    st, h, b = get(e, path)
    assert h["x-cache"] == "HIT" and b"Before Lamp" in b, h
    st, h, b = get(e, path, {"Cache-Control": "no-cache"})
    assert st == 200 and h["x-cache"] == "BYPASS" and "age" not in h and b"After Lamp" in b, (h, b[:200])
    st, h2, b2 = get(e, path)
    assert h2["x-cache"] == "HIT" and b2 == b and h2["etag"] == h["etag"], h2
    st, h3, _ = get(e, path, {"Pragma": "no-cache"})
    assert h3["x-cache"] == "BYPASS", h3


# ------------------------------------------------------------------ invalidation

def test_name_update_makes_the_cached_page_a_miss_with_the_new_name(e):
    p = create(e, category="rc-update", name="Old Name Mug")
    path = "/api/products?category=rc-update&limit=10"
    get(e, path)
    st, h, b = get(e, path)
    assert h["x-cache"] == "HIT" and b"Old Name Mug" in b
    st, _, _ = req(e, "PATCH", "/api/products/" + p["id"], {"name": "New Name Mug"})
    assert st == 200
    st, h, b = get(e, path)
    assert h["x-cache"] == "MISS" and "age" not in h, h
    doc = json.loads(b)
    assert [x["name"] for x in doc["products"]] == ["New Name Mug"], doc
    st, h, _ = get(e, path)
    assert h["x-cache"] == "HIT"


def test_stock_update_delete_and_toggle_reach_cached_pages(e):
    p = create(e, category="rc-data", stock=1)
    path = "/api/products?category=rc-data"
    get(e, path)
    assert get(e, path)[1]["x-cache"] == "HIT"
    req(e, "PATCH", "/api/products/" + p["id"], {"stock": 42})            # not a listed field
    st, h, b = get(e, path)
    assert "age" not in h and json.loads(b)["products"][0]["stock"] == 42, (h, b[:200])
    assert get(e, path)[1]["x-cache"] == "HIT"
    st, _, _ = req(e, "POST", f"/api/products/{p['id']}/wishlist")
    assert st == 200
    st, h, b = get(e, path)
    assert "age" not in h and json.loads(b)["products"][0]["wishlistCount"] == 1, (h, b[:200])
    assert req(e, "DELETE", "/api/products/" + p["id"])[0] == 204
    st, h, b = get(e, path)
    assert "age" not in h and json.loads(b)["total"] == 0, (h, b[:200])


# ------------------------------------------------------------------ policy

def test_policy_edit_adds_and_removes_routes_on_reload(e):
    added = SHIPPED.replace(
        '  rules = {\n',
        '  rules = {\n'
        '    { route = "/test/redis", ttl = 60 },\n'
        '    { route = "/test/items/{id}", ttl = 60, vary = { "Accept-Language" } },\n')
    assert added != SHIPPED
    write_policy(e, "response_cache.lua", added)
    wait_until(lambda: every_worker(e, lambda: "etag" in get(e, "/test/redis")[1]), 10,
               what="/test/redis cached on every worker")
    assert reload_error(e) is None
    # the handler (an INCR) no longer runs on a hit
    st, h1, b1 = get(e, "/test/redis")
    st, h2, b2 = get(e, "/test/redis")
    assert h2["x-cache"] == "HIT" and b2 == b1, (h2, b1, b2)
    # a pattern with a parameter: one entry per path, and per Accept-Language
    fr = {"Accept-Language": "fr"}
    assert get(e, "/test/items/a1", fr)[1]["x-cache"] == "MISS"
    st, h, b = get(e, "/test/items/a1", fr)
    assert h["x-cache"] == "HIT" and h["vary"].lower() == "accept-language" and json.loads(b) == {"id": "a1"}, h
    assert get(e, "/test/items/a2", fr)[1]["x-cache"] == "MISS"
    assert get(e, "/test/items/a1", {"Accept-Language": "de"})[1]["x-cache"] == "MISS"
    # remove every rule: nothing goes through the middleware any more
    write_policy(e, "response_cache.lua", "return { rules = {} }\n")
    wait_until(lambda: every_worker(e, lambda: "etag" not in get(e, "/api/products?category=rc-hit&limit=5")[1]),
               10, what="/api/products no longer cached")
    st, h, _ = get(e, "/test/redis")
    assert "etag" not in h and "age" not in h, h
    write_policy(e, "response_cache.lua", SHIPPED)
    wait_until(lambda: every_worker(e, lambda: "etag" in get(e, "/api/products?category=rc-hit&limit=5")[1]),
               10, what="/api/products cached again")


def error_with(e, text):
    """The last reload error of the worker that answered, when it has text."""
    err = reload_error(e)
    return err if err and text in err else None


def test_invalid_policy_is_rejected_with_file_and_line(e):
    bad = SHIPPED.replace('route = "/api/products", ttl = 60', 'route = "/api/products", ttl = -1')
    assert bad != SHIPPED
    line = next(i for i, l in enumerate(bad.splitlines(), 1) if "ttl = -1" in l)
    write_policy(e, "response_cache.lua", bad)
    # each /health answer comes from any worker, and each reloads on its own:
    # the error checked is the one the wait saw
    err = wait_until(lambda: error_with(e, "ttl"), 10, what="reload error in /health")
    assert f"response_cache.lua:{line}:" in err and "rules[1].ttl" in err and ">= 1" in err, err
    # what serves is unchanged
    st, h, _ = get(e, "/api/products?category=rc-hit&limit=5")
    assert st == 200 and "etag" in h
    # a rule naming a route that does not exist is an error too
    typo = SHIPPED.replace('route = "/api/products"', 'route = "/api/prodcuts"')
    line = next(i for i, l in enumerate(typo.splitlines(), 1) if "/api/prodcuts" in l)
    write_policy(e, "response_cache.lua", typo)
    err = wait_until(lambda: error_with(e, "prodcuts"), 10, what="route error")
    assert f"response_cache.lua:{line}:" in err and "no GET route" in err, err
    # and so is a bad invalidation policy
    write_policy(e, "response_cache.lua", SHIPPED)
    write_policy(e, "invalidation.lua", "return { events = { product_created = { tags = { 'products' } } } }\n")
    err = wait_until(lambda: error_with(e, "invalidation.lua"), 10, what="invalidation error")
    assert "product_updated" in err, err
    with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "policies",
                           "invalidation.lua")) as f:
        write_policy(e, "invalidation.lua", f.read())
    wait_until(lambda: every_worker(e, lambda: reload_error(e) is None), 10, what="error cleared")


def main():
    t = Runner()
    r = Redis()
    e = Engine(r.port, workers=2)
    try:
        t.run_all(globals(), e)
        assert e.stop() == 0
    finally:
        e.close()
        r.close()
    t.done()


if __name__ == "__main__":
    main()
