"""Product catalogue API over HTTP: seeds, listing and filters, create /
read / update / delete, validation and error shapes, wishlist toggles with
the sid cookie, and the X-Cache behaviour (MISS then HIT; fresh after a
write on every worker)."""
import http.client
import json
import math
import re
import threading

from harness import Engine, Redis, Runner, db_sql

SID_RE = re.compile(r"^sid=([A-Za-z0-9_-]{43}); Path=/; HttpOnly; SameSite=Lax$")
PRODUCT_KEYS = ["id", "name", "description", "price", "stock", "category", "images", "isActive",
                "wishlistCount", "version", "createdAt", "updatedAt"]


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


def jreq(e, method, path, body=None, headers=None):
    status, hdrs, data = req(e, method, path, body, headers)
    return status, hdrs, (json.loads(data) if data else None)


def db_count(e, where="1 = 1", *params):
    if e.env.get("DATABASE_URL"):   # SQLite's LIKE ignores ASCII case, PostgreSQL's ILIKE does
        where = where.replace(" LIKE ", " ILIKE ")
    return db_sql(e, f"SELECT count(*) FROM products WHERE {where}", params)[0][0]


def expect_error(resp, status, code):
    st, hdrs, doc = resp
    assert st == status, (st, doc)
    assert hdrs["content-type"] == "application/json"
    assert doc["success"] is False and doc["error"] == code and doc["message"], doc
    return doc


def create(e, **fields):
    body = {"name": "Test Kettle", "price": 19.99, "category": "home"}
    body.update(fields)
    st, hdrs, doc = jreq(e, "POST", "/api/products", body)
    assert st == 201, (st, doc)
    return doc, hdrs


def check_product_shape(p):
    assert list(p.keys()) == PRODUCT_KEYS, list(p.keys())
    assert isinstance(p["images"], list)
    assert isinstance(p["isActive"], bool)
    assert isinstance(p["price"], (int, float)) and abs(p["price"] * 100 - round(p["price"] * 100)) < 1e-6
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$", p["createdAt"]), p["createdAt"]


# ------------------------------------------------------------------ seeds and lists

def test_seeded_catalogue_has_at_least_200_products(e):
    st, hdrs, doc = jreq(e, "GET", "/api/products")
    assert st == 200, doc
    assert doc["total"] >= 200, doc["total"]
    assert doc["total"] == db_count(e)
    assert doc["page"] == 1 and doc["limit"] == 20 and len(doc["products"]) == 20
    for p in doc["products"]:
        check_product_shape(p)
    st, _, one = jreq(e, "GET", "/api/products/p-0001")
    assert st == 200 and one["id"] == "p-0001" and one["images"] == [] and one["price"] == 0.99
    st, _, two = jreq(e, "GET", "/api/products/p-0002")
    assert two["price"] == 38 and len(two["images"]) == 1 and two["category"] == "books"
    _, _, raw = req(e, "GET", "/api/products/p-0002")
    assert b'"price":38,' in raw and b"https://img" in raw   # 38, not 38.0; no \/ escapes


def test_pagination_covers_every_product_once(e):
    total = db_count(e)
    seen = []
    pages = math.ceil(total / 100)
    for page in range(1, pages + 1):
        st, _, doc = jreq(e, "GET", f"/api/products?page={page}&limit=100")
        assert st == 200 and doc["total"] == total and doc["page"] == page and doc["limit"] == 100
        expect = 100 if page < pages else total - 100 * (pages - 1)
        assert len(doc["products"]) == expect, (page, len(doc["products"]))
        seen += [p["id"] for p in doc["products"]]
    assert len(seen) == total == len(set(seen))
    created = [p["createdAt"] for p in jreq(e, "GET", "/api/products?limit=100")[2]["products"]]
    assert created == sorted(created, reverse=True), "newest first"
    st, _, past = jreq(e, "GET", f"/api/products?page={pages + 5}&limit=100")
    assert st == 200 and past["products"] == [] and past["total"] == total


def test_category_filter(e):
    st, hdrs, doc = jreq(e, "GET", "/api/products?category=books&limit=100")
    assert st == 200 and "x-cache" in hdrs
    assert doc["total"] == db_count(e, "category = ?", "books") >= 20
    assert len(doc["products"]) == doc["total"]
    assert all(p["category"] == "books" for p in doc["products"])
    st, _, none = jreq(e, "GET", "/api/products?category=no-such-category")
    assert st == 200 and none["total"] == 0 and none["products"] == []
    cats = {p["category"] for p in jreq(e, "GET", "/api/products?limit=100")[2]["products"]}
    assert len(cats) >= 8, cats


def test_search_is_case_insensitive_on_name_and_description(e):
    st, _, doc = jreq(e, "GET", "/api/products?search=HeadPhones&limit=100")
    assert st == 200
    expect = db_count(e, "name LIKE '%headphones%' OR description LIKE '%headphones%'")
    assert doc["total"] == expect > 0, (doc["total"], expect)
    for p in doc["products"]:
        assert "headphones" in (p["name"] + p["description"]).lower()
    # a word only in descriptions
    st, _, d2 = jreq(e, "GET", "/api/products?search=warranty&limit=100")
    assert d2["total"] == db_count(e, "description LIKE '%warranty%'") > 0
    # combined with a category
    st, _, d3 = jreq(e, "GET", "/api/products?search=the&category=toys&limit=100")
    assert d3["total"] == db_count(e, "category = 'toys' AND (name LIKE '%the%' OR description LIKE '%the%')")
    assert all(p["category"] == "toys" for p in d3["products"])


def test_search_wildcards_are_literal(e):
    st, _, doc = jreq(e, "GET", "/api/products?search=%25")          # "%"
    assert st == 200 and doc["total"] == 0, doc["total"]
    st, _, doc = jreq(e, "GET", "/api/products?search=_")
    assert st == 200 and doc["total"] == 0, doc["total"]
    p, _ = create(e, name="Flash sale 100%_off", category="wildcards")
    st, _, doc = jreq(e, "GET", "/api/products?search=100%25_")
    assert [x["id"] for x in doc["products"]] == [p["id"]], doc
    assert req(e, "DELETE", "/api/products/" + p["id"])[0] == 204


def test_is_active_filter(e):
    _, _, act = jreq(e, "GET", "/api/products?isActive=true&limit=100")
    _, _, ina = jreq(e, "GET", "/api/products?isActive=false&limit=100")
    assert ina["total"] == db_count(e, "is_active = 0") > 0
    assert act["total"] == db_count(e, "is_active = 1")
    assert act["total"] + ina["total"] == db_count(e)
    assert all(p["isActive"] is False for p in ina["products"])
    assert all(p["isActive"] is True for p in act["products"])
    _, _, mix = jreq(e, "GET", "/api/products?isActive=false&category=electronics&limit=100")
    assert mix["total"] == db_count(e, "is_active = 0 AND category = 'electronics'")


def test_bad_list_parameters_are_400_with_details(e):
    doc = expect_error(jreq(e, "GET", "/api/products?page=0&limit=101&isActive=yes"), 400, "validation_failed")
    assert [d["field"] for d in doc["details"]] == ["page", "limit", "isActive"], doc
    for q in ("limit=0", "limit=abc", "page=-1", "page=1.5", "limit=", "search=" + "x" * 101):
        expect_error(jreq(e, "GET", "/api/products?" + q), 400, "validation_failed")
    st, _, doc = jreq(e, "GET", "/api/products?limit=100&page=1&unknown=1")
    assert st == 200 and doc["limit"] == 100


# ------------------------------------------------------------------ CRUD

def test_create_returns_201_location_and_can_be_read(e):
    body = {"name": "Copper Kettle", "description": "Boils \"water\"\nfast", "price": 49.5, "stock": 12,
            "category": "home", "images": ["https://img.example/k1.jpg", "https://img.example/k2.jpg"],
            "isActive": True}
    st, hdrs, doc = jreq(e, "POST", "/api/products", body)
    assert st == 201, doc
    check_product_shape(doc)
    assert re.match(r"^p-[0-9a-f]{16}$", doc["id"]), doc["id"]
    assert hdrs["location"] == "/api/products/" + doc["id"]
    for k in body:
        assert doc[k] == body[k], (k, doc[k])
    assert doc["version"] == 1 and doc["wishlistCount"] == 0 and doc["createdAt"] == doc["updatedAt"]
    st, _, got = jreq(e, "GET", hdrs["location"])
    assert st == 200 and got == doc
    # newest first: it heads the default list at once (the list cache was invalidated)
    _, _, page = jreq(e, "GET", "/api/products")
    assert page["products"][0]["id"] == doc["id"]
    assert page["total"] == db_count(e)


def test_create_defaults(e):
    doc, _ = create(e, price=10)
    assert doc["description"] == "" and doc["stock"] == 0 and doc["images"] == [] and doc["isActive"] is True
    assert doc["price"] == 10
    st, _, raw = req(e, "GET", "/api/products/" + doc["id"])
    assert b'"price":10,' in raw and b'"images":[]' in raw


def test_put_partial_update_bumps_version(e):
    p, _ = create(e, stock=3)
    for i in range(3):                                   # warm the cache
        req(e, "GET", "/api/products/" + p["id"])
    st, _, doc = jreq(e, "PUT", "/api/products/" + p["id"], {"stock": 7})
    assert st == 200, doc
    assert doc["stock"] == 7 and doc["version"] == 2
    assert doc["name"] == p["name"] and doc["price"] == p["price"] and doc["createdAt"] == p["createdAt"]
    assert doc["updatedAt"] >= p["updatedAt"]
    st, _, doc = jreq(e, "PUT", "/api/products/" + p["id"], {"name": "Renamed", "price": 0.1})
    assert st == 200 and doc["version"] == 3 and doc["name"] == "Renamed" and doc["price"] == 0.1
    assert doc["stock"] == 7


def test_patch_is_accepted(e):
    p, _ = create(e)
    st, _, doc = jreq(e, "PATCH", "/api/products/" + p["id"], {"isActive": False, "images": []})
    assert st == 200 and doc["isActive"] is False and doc["version"] == 2 and doc["images"] == []
    st, _, same = jreq(e, "PATCH", "/api/products/" + p["id"], {})
    assert st == 200 and same["version"] == 2          # nothing to change


def test_after_update_every_worker_serves_the_new_version(e):
    p, _ = create(e)
    path = "/api/products/" + p["id"]
    for _ in range(8):                                   # fresh connections: both workers fill/hit
        assert jreq(e, "GET", path)[2]["version"] == 1
    st, _, upd = jreq(e, "PUT", path, {"price": 12.34})
    assert st == 200 and upd["version"] == 2
    for _ in range(12):
        st, hdrs, doc = jreq(e, "GET", path)
        assert st == 200 and doc["version"] == 2 and doc["price"] == 12.34, (hdrs.get("x-cache"), doc)
    # lists show it too (price is a listed field: the list pages were invalidated)
    _, _, page = jreq(e, "GET", "/api/products?category=home&limit=100")
    mine = [x for x in page["products"] if x["id"] == p["id"]]
    assert mine and mine[0]["version"] == 2 and mine[0]["price"] == 12.34


def test_stock_only_update_is_visible_in_cached_list_pages(e):
    p, _ = create(e, category="stockcheck", stock=1)
    path = "/api/products?category=stockcheck"
    assert jreq(e, "GET", path)[2]["products"][0]["stock"] == 1
    jreq(e, "PATCH", "/api/products/" + p["id"], {"stock": 99})
    for _ in range(6):
        _, _, doc = jreq(e, "GET", path)
        assert doc["products"][0]["stock"] == 99 and doc["products"][0]["version"] == 2, doc


def test_delete_is_204_then_404(e):
    p, _ = create(e, category="deleteme")
    path = "/api/products/" + p["id"]
    assert req(e, "GET", path)[0] == 200
    assert jreq(e, "GET", "/api/products?category=deleteme")[2]["total"] == 1
    st, _, body = req(e, "DELETE", path)
    assert st == 204 and body == b""
    expect_error(jreq(e, "GET", path), 404, "not_found")
    expect_error(jreq(e, "DELETE", path), 404, "not_found")
    _, _, page = jreq(e, "GET", "/api/products?category=deleteme")
    assert page["total"] == 0 and page["products"] == []


def test_validation_errors_have_details(e):
    doc = expect_error(jreq(e, "POST", "/api/products", {}), 400, "validation_failed")
    assert [d["field"] for d in doc["details"]] == ["name", "price", "category"]
    assert all(d["message"] for d in doc["details"])
    bad = {"name": "x" * 201, "description": "d" * 2001, "price": 0.1 + 0.2, "stock": -1,
           "category": "", "images": ["not a url"] + ["https://x.example/a"] * 20, "isActive": "yes",
           "colour": "red", "version": 3}
    doc = expect_error(jreq(e, "POST", "/api/products", bad), 400, "validation_failed")
    fields = [d["field"] for d in doc["details"]]
    assert fields == ["name", "description", "price", "stock", "category", "images", "isActive",
                      "colour", "version"], fields
    for body in ({"name": "a", "category": "c", "price": -1},
                 {"name": "a", "category": "c", "price": 1e-3},
                 {"name": "a", "category": "c", "price": 1e12},
                 {"name": "a", "category": "c", "price": "9.99"},
                 {"name": "a", "category": "c", "price": 1, "stock": 1.5},
                 {"name": "a", "category": "c", "price": 1, "images": "https://x.example/a"}):
        expect_error(jreq(e, "POST", "/api/products", body), 400, "validation_failed")
    doc = expect_error(jreq(e, "PUT", "/api/products/p-0001", {"price": -5, "id": "p-9"}), 400,
                       "validation_failed")
    assert [d["field"] for d in doc["details"]] == ["price", "id"]
    # nothing was written
    assert jreq(e, "GET", "/api/products/p-0001")[2]["version"] >= 1
    assert db_count(e, "name = ?", "x" * 201) == 0


def test_malformed_json_and_non_object_bodies(e):
    h = {"Content-Type": "application/json"}
    expect_error(jreq(e, "POST", "/api/products", b'{"name": "x",', h), 400, "invalid_json")
    expect_error(jreq(e, "POST", "/api/products", b'{"price": NaN}', h), 400, "invalid_json")
    expect_error(jreq(e, "POST", "/api/products", b"", h), 400, "invalid_json")
    expect_error(jreq(e, "PUT", "/api/products/p-0001", b"{nope}", h), 400, "invalid_json")
    for body in (b"[]", b'["a"]', b'"text"', b"42", b"null", b"true"):
        st, _, doc = jreq(e, "POST", "/api/products", body, h)
        assert st == 400 and doc["success"] is False, (body, doc)
    expect_error(jreq(e, "POST", "/api/products", b"[1,2]", h), 400, "invalid_body")
    expect_error(jreq(e, "PATCH", "/api/products/p-0001", b"[]", h), 400, "invalid_body")


def test_unknown_ids_are_404(e):
    for method, body in (("GET", None), ("PUT", {"stock": 1}), ("PATCH", {"stock": 1}), ("DELETE", None)):
        doc = expect_error(jreq(e, method, "/api/products/p-does-not-exist", body), 404, "not_found")
        assert "p-does-not-exist" in doc["message"]
    expect_error(jreq(e, "GET", "/api/products/" + "x" * 200), 404, "not_found")
    expect_error(jreq(e, "GET", "/api/products/a%20b"), 404, "not_found")
    expect_error(jreq(e, "POST", "/api/products/p-nope/wishlist"), 404, "not_found")
    # a "not found" is cached negatively but creating later ids is unaffected
    st, hdrs, _ = jreq(e, "GET", "/api/products/p-does-not-exist")
    assert st == 404 and hdrs.get("x-cache") in ("HIT", "L1", "MISS"), hdrs


def test_wrong_method_is_405_with_allow(e):
    doc = expect_error(jreq(e, "DELETE", "/api/products"), 405, "method_not_allowed")
    assert jreq(e, "DELETE", "/api/products")[1]["allow"] == "GET, HEAD, POST"
    st, hdrs, _ = jreq(e, "POST", "/api/products/p-0001")
    assert st == 405 and hdrs["allow"] == "DELETE, GET, HEAD, PATCH, PUT"
    st, hdrs, _ = jreq(e, "GET", "/api/products/p-0001/wishlist")
    assert st == 405 and hdrs["allow"] == "POST"
    st, hdrs, _ = jreq(e, "POST", "/api/wishlist")
    assert st == 405 and hdrs["allow"] == "GET, HEAD"
    assert doc["message"]


def test_head_of_a_product(e):
    st, hdrs, body = req(e, "HEAD", "/api/products/p-0003")
    assert st == 200 and body == b"" and int(hdrs["content-length"]) > 100


# ------------------------------------------------------------------ wishlist

def test_wishlist_toggle_sets_cookie_and_moves_the_count(e):
    p, _ = create(e)
    pid = p["id"]
    st, hdrs, doc = jreq(e, "POST", f"/api/products/{pid}/wishlist")
    assert st == 200, doc
    m = SID_RE.match(hdrs.get("set-cookie", ""))
    assert m, hdrs.get("set-cookie")
    sid = m.group(1)
    assert doc == {"productId": pid, "wishlisted": True, "wishlistCount": 1}
    cookie = {"Cookie": f"theme=dark; sid={sid}"}
    # the product reflects the toggle (its cache entry was invalidated)
    _, _, got = jreq(e, "GET", "/api/products/" + pid)
    assert got["wishlistCount"] == 1 and got["version"] == 2
    # the session's wishlist lists it
    st, hdrs, wl = jreq(e, "GET", "/api/wishlist", headers=cookie)
    assert st == 200 and [x["id"] for x in wl["products"]] == [pid], wl
    check_product_shape(wl["products"][0])
    assert wl["products"][0]["wishlistCount"] == 1
    # a second session moves the count to 2; toggling again takes it back
    st, h2, d2 = jreq(e, "POST", f"/api/products/{pid}/wishlist")
    assert d2["wishlisted"] is True and d2["wishlistCount"] == 2
    sid2 = SID_RE.match(h2["set-cookie"]).group(1)
    assert sid2 != sid
    st, h3, d3 = jreq(e, "POST", f"/api/products/{pid}/wishlist", headers=cookie)
    assert st == 200 and "set-cookie" not in h3            # known session: no new cookie
    assert d3 == {"productId": pid, "wishlisted": False, "wishlistCount": 1}
    _, _, wl = jreq(e, "GET", "/api/wishlist", headers=cookie)
    assert wl == {"products": []}
    st, _, d4 = jreq(e, "POST", f"/api/products/{pid}/wishlist", headers=cookie)
    assert d4["wishlisted"] is True and d4["wishlistCount"] == 2
    _, _, wl = jreq(e, "GET", "/api/wishlist", headers=cookie)
    assert [x["id"] for x in wl["products"]] == [pid]
    _, _, got = jreq(e, "GET", "/api/products/" + pid)
    assert got["wishlistCount"] == 2 and got["version"] == 5


def test_wishlist_lists_newest_first_and_drops_deleted_products(e):
    a, _ = create(e, name="Wish A")
    b, _ = create(e, name="Wish B")
    st, hdrs, _ = jreq(e, "POST", f"/api/products/{a['id']}/wishlist")
    cookie = {"Cookie": "sid=" + SID_RE.match(hdrs["set-cookie"]).group(1)}
    jreq(e, "POST", f"/api/products/{b['id']}/wishlist", headers=cookie)
    jreq(e, "POST", "/api/products/p-0010/wishlist", headers=cookie)
    _, _, wl = jreq(e, "GET", "/api/wishlist", headers=cookie)
    assert [x["id"] for x in wl["products"]] == ["p-0010", b["id"], a["id"]]
    jreq(e, "POST", "/api/products/p-0010/wishlist", headers=cookie)   # back to its old state
    assert req(e, "DELETE", "/api/products/" + b["id"])[0] == 204
    _, _, wl = jreq(e, "GET", "/api/wishlist", headers=cookie)
    assert [x["id"] for x in wl["products"]] == [a["id"]], wl


def test_concurrent_toggles_and_updates_lose_nothing(e):
    p, _ = create(e)
    pid = p["id"]
    results = []

    def toggle():
        results.append(jreq(e, "POST", f"/api/products/{pid}/wishlist"))

    def bump(i):
        results.append(jreq(e, "PATCH", "/api/products/" + pid, {"stock": i}))

    threads = [threading.Thread(target=toggle) for _ in range(16)]
    threads += [threading.Thread(target=bump, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(results) == 24 and all(r[0] == 200 for r in results), [r[0] for r in results]
    counts = sorted(r[2]["wishlistCount"] for r in results if "wishlistCount" in r[2] and "productId" in r[2])
    assert counts == list(range(1, 17)), counts
    _, _, doc = jreq(e, "GET", "/api/products/" + pid)
    assert doc["wishlistCount"] == 16 and doc["version"] == 1 + 16 + 8, doc


def test_wishlist_without_or_with_a_bad_cookie(e):
    st, hdrs, doc = jreq(e, "GET", "/api/wishlist")
    assert st == 200 and doc == {"products": []} and "set-cookie" not in hdrs
    st, _, doc = jreq(e, "GET", "/api/wishlist", headers={"Cookie": "sid=short"})
    assert st == 200 and doc == {"products": []}
    st, hdrs, doc = jreq(e, "POST", "/api/products/p-0020/wishlist", headers={"Cookie": "sid=../../etc"})
    assert st == 200 and SID_RE.match(hdrs["set-cookie"]) and doc["wishlisted"] is True
    sid = SID_RE.match(hdrs["set-cookie"]).group(1)
    jreq(e, "POST", "/api/products/p-0020/wishlist", headers={"Cookie": "sid=" + sid})  # restore


# ------------------------------------------------------------------ X-Cache

def test_fresh_cached_products_are_served_by_the_c_fast_path_byte_for_byte(e):
    path = "/api/products/p-0033"
    e.request("GET", path)                                   # fill (and let the cache library vouch for Redis)
    before = e.json("GET", "/api/cache/metrics")[2]["fastPathHits"]
    fast = [e.request("GET", path) for _ in range(6)]        # no query string: the fast path may answer
    lua = e.request("GET", path + "?via=lua")                # a query string always goes to the Lua handler
    after = e.json("GET", "/api/cache/metrics")[2]["fastPathHits"]
    assert after - before >= 4, (before, after)              # both workers, after their first Lua fetch
    for st, hdrs, body in fast:
        assert st == 200 and body == lua[2]
        assert hdrs["X-Cache"] == lua[1]["X-Cache"] == "HIT"
        assert hdrs["Content-Type"] == lua[1]["Content-Type"] == "application/json"
        assert int(hdrs["Age"]) >= 0 and int(lua[1]["Age"]) >= 0   # cached answers say how old they are
    # a write is visible at once through the fast path too
    st, _, doc = jreq(e, "PATCH", path, {"stock": 42})
    assert st == 200
    for _ in range(6):
        st, _, got = jreq(e, "GET", path)
        assert got["version"] == doc["version"] and got["stock"] == 42


def test_x_cache_miss_then_hit(e):
    # list pages fill the product cache too: start from an entry a write just
    # invalidated (a wishlist toggle deletes it; an update writes it through)
    path = "/api/products/p-0150"
    assert jreq(e, "PATCH", path, {"stock": 5})[0] == 200
    st, hdrs, doc = jreq(e, "GET", path)
    assert st == 200 and hdrs["x-cache"] == "HIT" and doc["stock"] == 5, hdrs
    assert e.request("POST", path + "/wishlist")[0] == 200
    st, hdrs, first = jreq(e, "GET", path)
    assert st == 200 and hdrs["x-cache"] == "MISS", hdrs
    st, hdrs, second = jreq(e, "GET", path)
    assert st == 200 and hdrs["x-cache"] in ("HIT", "L1"), hdrs
    assert first == second
    # list pages carry the id list's source
    q = "/api/products?category=garden&page=2&limit=7"
    assert jreq(e, "GET", q)[1]["x-cache"] == "MISS"
    assert jreq(e, "GET", q)[1]["x-cache"] in ("HIT", "L1")
    # Cache-Control: no-cache goes to the database
    st, hdrs, third = jreq(e, "GET", path, headers={"Cache-Control": "no-cache"})
    assert st == 200 and hdrs["x-cache"] == "BYPASS" and third == first


def test_responses_are_byte_identical_from_cache(e):
    _, h1, a = req(e, "GET", "/api/products?search=mug&limit=5")
    _, h2, b = req(e, "GET", "/api/products?search=MUG&limit=5")   # same normalised key
    assert a == b and h2["x-cache"] in ("HIT", "L1"), (h1.get("x-cache"), h2.get("x-cache"))
    doc = json.loads(a)
    assert doc["total"] == db_count(e, "name LIKE '%mug%' OR description LIKE '%mug%'")


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
