"""engine.metrics: counters live in memory the master shares with its
workers, so increments made by different workers add up exactly, and the
totals survive a reload (new VMs) and a worker restart (new process)."""
import concurrent.futures as cf
import os
import signal
import subprocess
import urllib.parse

from harness import Engine, Redis, Runner, wait_until

N = 400


def incr(e, name):
    status, _, body = e.json("POST", "/test/metrics/incr?name=" + urllib.parse.quote(name, safe=""))
    assert status == 200, (status, body)
    return body["worker"]


def get(e, name):
    status, _, body = e.json("GET", "/test/metrics/get?name=" + urllib.parse.quote(name, safe=""))
    assert status == 200, (status, body)
    return body["value"], body["worker"]


def values_seen_by_every_worker(e, name, workers=2, timeout=10):
    """{worker: {values read}} once every worker has answered (fresh
    connections spread over them; a restarted worker may need a moment
    before it listens)."""
    seen = {}

    def every_worker_answered():
        value, worker = get(e, name)
        seen.setdefault(worker, set()).add(value)
        return len(seen) == workers
    wait_until(every_worker_answered, timeout, 0, f"an answer from each of {workers} workers")
    return seen


def name_for(e, what):
    return f'it_metrics_{what}{{port="{e.port}"}}'


def test_increments_of_two_workers_are_summed(e):
    name = name_for(e, "hits")
    # every request opens a fresh connection: SO_REUSEPORT spreads them
    with cf.ThreadPoolExecutor(8) as ex:
        workers = list(ex.map(lambda _: incr(e, name), range(N)))
    counts = {w: workers.count(w) for w in set(workers)}
    assert set(counts) == {0, 1}, f"both workers must take part: {counts}"
    seen = values_seen_by_every_worker(e, name)
    assert seen == {0: {N}, 1: {N}}, seen


def test_totals_survive_a_reload(e):
    name = name_for(e, "hits")
    g0 = e.json("GET", "/test/ok")[2]["generation"]
    e.signal(signal.SIGHUP)
    wait_until(lambda: all(e.json("GET", "/test/ok")[2]["generation"] > g0 for _ in range(8)), 10,
               what="generation bump on every worker")
    seen = values_seen_by_every_worker(e, name)
    assert seen == {0: {N}, 1: {N}}, seen
    for _ in range(10):
        incr(e, name)
    seen = values_seen_by_every_worker(e, name)
    assert seen == {0: {N + 10}, 1: {N + 10}}, seen


def test_totals_survive_a_worker_restart(e):
    name = name_for(e, "hits")
    before = get(e, name)[0]

    def workers():
        out = subprocess.run(["pgrep", "-P", str(e.proc.pid)], capture_output=True, text=True)
        return set(out.stdout.split())
    pids = wait_until(lambda: (lambda p: p if len(p) == 2 else None)(workers()), 5, what="two workers")
    victim = sorted(pids)[0]
    os.kill(int(victim), signal.SIGKILL)
    wait_until(lambda: len(workers()) == 2 and victim not in workers(), 10, 0.05, "worker restart")
    seen = values_seen_by_every_worker(e, name)
    assert seen == {0: {before}, 1: {before}}, seen
    with cf.ThreadPoolExecutor(8) as ex:
        ids = set(ex.map(lambda _: incr(e, name), range(100)))
    assert ids == {0, 1}, ids
    seen = values_seen_by_every_worker(e, name)
    assert seen == {0: {before + 100}, 1: {before + 100}}, seen


def main():
    t = Runner()
    r = Redis()
    e = Engine(r.port, workers=2)
    try:
        t.run_all(globals(), e)
    finally:
        try:
            e.close()
        finally:
            r.close()
    t.done()


if __name__ == "__main__":
    main()
