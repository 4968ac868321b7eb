"""Hot reload: file edits and SIGHUP build a new generation; a bad edit is
rejected without touching what serves, reported in /health and the log, and
a good edit clears it; reloads under load drop no request."""
import concurrent.futures as cf
import os
import signal
import subprocess
import threading
import time

from harness import BIN, Engine, Redis, Runner, wait_until

POLICY = """return {
  ttl = { product = %d, list = 600, search = 300, category = 3600, wishlist = 900, negative = 30 },
  jitter = 0.1,
}
"""


def write_policy(e, text):
    path = os.path.join(e.policy_dir, "cache.lua")
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def all_workers(e, fn, n=8):
    return all(fn(e.json("GET", "/test/policy")[2]) for _ in range(n))


def health_all(e, fn, n=8):
    return all(fn(e.json("GET", "/health")[2]) for _ in range(n))


def test_file_edit_reloads(e):
    write_policy(e, POLICY % 1234)
    wait_until(lambda: all_workers(e, lambda d: d["product_ttl"] == 1234), 5, what="new TTL on every worker")


def test_syntax_error_is_rejected_and_reported(e):
    before = e.json("GET", "/test/policy")[2]
    write_policy(e, "return { ttl = { product = 99, \n  list = }")
    wait_until(lambda: health_all(e, lambda h: h["policies"]["last_reload_error"] is not None), 5,
               what="reload error in /health")
    h = e.json("GET", "/health")[2]
    err = h["policies"]["last_reload_error"]
    assert "cache.lua:2:" in err, err
    assert h["policies"]["generation"] == before["generation"]
    # old behaviour still served
    assert all_workers(e, lambda d: d["product_ttl"] == before["product_ttl"])
    assert "reload rejected" in e.log_text()
    # a good edit clears it
    write_policy(e, POLICY % 777)
    wait_until(lambda: health_all(e, lambda h: h["policies"]["last_reload_error"] is None), 5,
               what="error cleared")
    assert all_workers(e, lambda d: d["product_ttl"] == 777)


def test_schema_violation_is_rejected_with_line(e):
    write_policy(e, "return {\n  ttl = {\n    product = -5,\n  },\n}\n")
    wait_until(lambda: health_all(e, lambda h: h["policies"]["last_reload_error"] is not None), 5,
               what="schema error")
    err = e.json("GET", "/health")[2]["policies"]["last_reload_error"]
    assert "cache.lua:3:" in err and "ttl.product" in err and ">= 1" in err, err
    write_policy(e, "return {\n  ttl = { prodcut = 10 },\n}\n")
    wait_until(lambda: "prodcut" in (e.json("GET", "/health")[2]["policies"]["last_reload_error"] or ""), 5,
               what="unknown-field error")
    write_policy(e, POLICY % 1800)
    wait_until(lambda: health_all(e, lambda h: h["policies"]["last_reload_error"] is None), 5, what="cleared")


def test_broken_handler_module_is_rejected(e):
    path = os.path.join(e.lua_dir, "handlers", "zz_broken.lua")
    with open(path, "w") as f:
        f.write("return { routes = { { 'GET', '/broken', 42 } } }\n")
    wait_until(lambda: "zz_broken" in (e.json("GET", "/health")[2]["policies"]["last_reload_error"] or ""), 5,
               what="route error")
    assert e.get("/test/ok")[0] == 200
    os.remove(path)
    wait_until(lambda: health_all(e, lambda h: h["policies"]["last_reload_error"] is None), 5, what="cleared")


def test_endless_loop_in_a_policy_is_rejected_not_hung(e):
    write_policy(e, "while true do end\nreturn {}\n")
    wait_until(lambda: "instruction budget" in (e.json("GET", "/health", timeout=5)[2]["policies"]["last_reload_error"] or ""),
               10, what="load budget error")
    assert e.get("/test/ok")[0] == 200
    write_policy(e, POLICY % 1800)
    wait_until(lambda: health_all(e, lambda h: h["policies"]["last_reload_error"] is None), 5, what="cleared")


def generations(e, seen=None):
    """{worker: generation} once every worker answered (fresh connections
    spread over the workers); generation numbers are per worker."""
    seen = dict(seen or {})
    for _ in range(64):
        d = e.json("GET", "/test/policy")[2]
        seen[d["worker"]] = max(seen.get(d["worker"], 0), d["generation"])
        if len(seen) == e.workers:
            return seen
    raise AssertionError(f"not every worker answered: {seen}")


def test_sighup_reloads(e):
    g0 = generations(e)
    e.signal(signal.SIGHUP)
    # every worker loads a newer generation than it had (a reload still
    # pending from an earlier file change may coalesce with this signal)
    wait_until(lambda: all(g > g0[w] for w, g in generations(e).items()), 5, what="generation bump")


def test_in_flight_request_finishes_on_its_generation(e):
    with cf.ThreadPoolExecutor(1) as ex:
        fut = ex.submit(e.get, "/test/sleep?ms=800")
        time.sleep(0.2)
        write_policy(e, POLICY % 4321)
        wait_until(lambda: all_workers(e, lambda d: d["product_ttl"] == 4321), 5, what="reload")
        assert fut.result()[0] == 200


def test_fifty_reloads_under_load_fail_no_request(e):
    stop = time.monotonic() + 10
    errors, count = [], [0]
    lock = threading.Lock()

    def load():
        while time.monotonic() < stop:
            try:
                st = e.get("/test/ok", timeout=5)[0]
                if st != 200:
                    with lock:
                        errors.append(st)
            except Exception as ex:  # noqa: BLE001
                with lock:
                    errors.append(repr(ex))
            with lock:
                count[0] += 1

    threads = [threading.Thread(target=load) for _ in range(4)]
    for th in threads:
        th.start()
    for i in range(50):
        if i % 2:
            e.signal(signal.SIGHUP)
        else:
            write_policy(e, POLICY % (1000 + i))
        time.sleep(0.19)
    for th in threads:
        th.join()
    print(f"     {count[0]} requests during 50 reloads, {len(errors)} failed")
    assert not errors, errors[:5]
    assert count[0] > 200


def test_check_command_validates_without_serving(e):
    env = dict(e.env)
    out = subprocess.run([BIN, "check"], env=env, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    write_policy(e, "return { ttl = 'soon' }")
    out = subprocess.run([BIN, "check"], env=env, capture_output=True, text=True, timeout=30)
    assert out.returncode != 0
    assert "cache.lua:1:" in out.stderr and "ttl" in out.stderr, out.stderr
    write_policy(e, POLICY % 1800)


def main():
    t = Runner()
    r = Redis()
    e = Engine(r.port)
    try:
        t.run_all(globals(), e)
        assert e.stop() == 0
    finally:
        e.close()
        r.close()
    t.done()


if __name__ == "__main__":
    main()
