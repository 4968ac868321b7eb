"""Redis Sentinel: the engine finds the master through 3 sentinels (1 master +
1 replica, all started here on free loopback ports), serves the catalogue
through it, and follows a failover under read load: SENTINEL FAILOVER, and
the master killed with SIGKILL. Each scenario prints and records its
figures (failed reads, time from the switch to the engine's first write on
the new master); a wrong master name is a clear error in /health."""
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time

from harness import Engine, Runner, free_port, wait_until
from loadgen import Figures, Load, summary
import harness

FIG = Figures("test_sentinel")
MASTER = "jjmaster"
IDS = [f"p-{n:04d}" for n in range(1, 21)]


# ------------------------------------------------------------ a tiny RESP client

def _read_reply(f):
    line = f.readline()
    if not line:
        raise OSError("closed")
    t, rest = line[:1], line[1:-2]
    if t in (b"+", b"-"):
        return rest.decode() if t == b"+" else RuntimeError(rest.decode())
    if t == b":":
        return int(rest)
    if t == b"$":
        n = int(rest)
        if n < 0:
            return None
        data = f.read(n + 2)
        return data[:-2].decode()
    if t == b"*":
        n = int(rest)
        return None if n < 0 else [_read_reply(f) for _ in range(n)]
    raise OSError("bad reply %r" % line)


def _encode(args):
    out = b"*%d\r\n" % len(args)
    for a in args:
        a = str(a).encode()
        out += b"$%d\r\n%s\r\n" % (len(a), a)
    return out


AUTH = {}   # port -> password, for the servers of a Topology with passwords


def cmd(port, *args, timeout=2.0):
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        f = s.makefile("rb")
        if port in AUTH:
            s.sendall(_encode(["AUTH", AUTH[port]]))
            _read_reply(f)
        s.sendall(_encode(args))
        return _read_reply(f)


def try_cmd(port, *args):
    try:
        return cmd(port, *args, timeout=0.5)
    except (OSError, ValueError):
        return None


# ------------------------------------------------------------ the servers

class Topology:
    """1 master + 1 replica (redis-server --replicaof) + 3 sentinels
    (redis-server <conf> --sentinel), quorum 2."""

    def __init__(self, password=None, sentinel_password=None):
        self.dir = tempfile.mkdtemp(prefix="jj-sentinel-")
        self.password = password
        self.procs = {}
        self.data_ports = [free_port(), free_port()]
        self.sentinel_ports = [free_port() for _ in range(3)]
        m, r = self.data_ports
        for p in self.data_ports:
            if password:
                AUTH[p] = password
        for p in self.sentinel_ports:
            if sentinel_password:
                AUTH[p] = sentinel_password
        self._start_data(m)
        self._start_data(r, replicaof=m)
        for p in self.sentinel_ports:
            conf = os.path.join(self.dir, f"sentinel-{p}.conf")
            with open(conf, "w") as f:
                f.write(f"port {p}\nbind 127.0.0.1\ndir {self.dir}\n"
                        f"logfile {self.dir}/sentinel-{p}.log\n"
                        f"sentinel monitor {MASTER} 127.0.0.1 {m} 2\n"
                        f"sentinel down-after-milliseconds {MASTER} 1000\n"
                        f"sentinel failover-timeout {MASTER} 3000\n"
                        f"sentinel parallel-syncs {MASTER} 1\n")
                if password:
                    f.write(f"sentinel auth-pass {MASTER} {password}\n")
                if sentinel_password:
                    f.write(f"requirepass {sentinel_password}\nsentinel sentinel-pass {sentinel_password}\n")
            self._spawn(p, ["redis-server", conf, "--sentinel"])
        for p in self.sentinel_ports:
            wait_until(lambda p=p: try_cmd(p, "PING") == "PONG", 5, what=f"sentinel {p}")
        # ready for a failover: the replica is in sync and every sentinel
        # knows it and the two other sentinels
        wait_until(lambda: "master_link_status:up" in (try_cmd(r, "INFO", "replication") or ""), 10,
                   what="replica in sync")
        for p in self.sentinel_ports:
            wait_until(lambda p=p: len(try_cmd(p, "SENTINEL", "replicas", MASTER) or []) == 1
                       and len(try_cmd(p, "SENTINEL", "sentinels", MASTER) or []) == 2, 20,
                       what=f"sentinel {p} sees the replica and the other sentinels")

    def _spawn(self, port, args):
        p = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=self.dir)
        harness._procs.append(p)
        self.procs[port] = p

    def _start_data(self, port, replicaof=None):
        args = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--dir", self.dir, "--dbfilename", f"dump-{port}.rdb", "--logfile", f"{self.dir}/redis-{port}.log"]
        if replicaof:
            args += ["--replicaof", "127.0.0.1", str(replicaof)]
        if self.password:
            args += ["--requirepass", self.password, "--masterauth", self.password]
        self._spawn(port, args)
        wait_until(lambda: try_cmd(port, "PING") == "PONG", 5, what=f"redis {port}")

    def master_port(self):
        a = try_cmd(self.sentinel_ports[0], "SENTINEL", "get-master-addr-by-name", MASTER)
        return int(a[1]) if a else None

    def other(self, port):
        return [p for p in self.data_ports if p != port][0]

    def sentinels_env(self):
        return ",".join(f"127.0.0.1:{p}" for p in self.sentinel_ports)

    def kill(self, port):
        p = self.procs[port]
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
            p.wait(timeout=5)

    def close(self):
        for port in list(self.procs):
            self.kill(port)
        for port in self.data_ports + self.sentinel_ports:
            AUTH.pop(port, None)
        if os.environ.get("JJ_KEEP_TMP") != "1":
            shutil.rmtree(self.dir, ignore_errors=True)


class SwitchWatch:
    """Records when a sentinel publishes +switch-master (monotonic time)."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        if port in AUTH:
            self.sock.sendall(_encode(["AUTH", AUTH[port]]))
        self.sock.sendall(_encode(["SUBSCRIBE", "+switch-master"]))
        self.f = self.sock.makefile("rb")
        self.at = None
        self.payload = None
        self.stopped = False
        if port in AUTH:
            _read_reply(self.f)
        _read_reply(self.f)   # the subscribe confirmation
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stopped and self.at is None:
            try:
                msg = _read_reply(self.f)
            except (OSError, ValueError):
                return
            if isinstance(msg, list) and msg and msg[0] == "message":
                self.at = time.monotonic()
                self.payload = msg[2]

    def close(self):
        self.stopped = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)   # unblocks the reader
        except OSError:
            pass
        self.thread.join(timeout=2)
        self.sock.close()


def engine_for(topo, env=None, wait_redis=True):
    e_env = {"REDIS_SENTINELS": topo.sentinels_env(), "REDIS_SENTINEL_MASTER": MASTER,
             # REDIS_URL's host and port are not used in Sentinel mode: point them nowhere
             "REDIS_HOST": "127.0.0.1", "REDIS_PORT": str(free_port())}
    e_env.update(env or {})
    return Engine(1, env=e_env, wait_redis=wait_redis)


def warm(e):
    for pid in IDS:
        for _ in range(4):
            assert e.get("/api/products/" + pid)[0] == 200


def product_reads(i):
    return "GET", "/api/products/" + IDS[i % len(IDS)], None


# ------------------------------------------------------------ tests

def test_catalogue_through_sentinel():
    """With passwords: the sentinels' own (REDIS_SENTINEL_PASSWORD) and the
    data servers' with a db from REDIS_URL, whose host and port are unused."""
    topo = Topology(password="data-secret", sentinel_password="sentinel-secret")
    e = engine_for(topo, {"REDIS_URL": f"redis://:data-secret@127.0.0.1:{free_port()}/2",
                          "REDIS_SENTINEL_PASSWORD": "sentinel-secret"})
    try:
        m = topo.master_port()
        st, _, doc = e.json("GET", "/health")
        assert doc["redis"]["status"] == "up", doc
        s = doc["redis"]["sentinel"]
        assert s["master"] == MASTER and s["address"] == f"127.0.0.1:{m}" and s["switches"] == 0, s
        assert doc["redis"]["role"] == "master", doc["redis"]
        st, _, p = e.json("POST", "/api/products", json.dumps({"name": "Sentinel Kettle", "price": 21.5,
                                                             "category": "home"}))
        assert st == 201, (st, p)
        pid = p["id"]
        seen = [e.get(f"/api/products/{pid}")[1].get("X-Cache") for _ in range(6)]
        assert "HIT" in seen, seen   # Redis hits (each worker fills L1 from Redis after its first miss)
        st, _, p2 = e.json("PUT", f"/api/products/{pid}", json.dumps({"price": 22.75}))
        assert st == 200 and p2["price"] == 22.75, (st, p2)
        wait_until(lambda: all(e.json("GET", f"/api/products/{pid}")[2]["price"] == 22.75 for _ in range(4)), 5,
                   what="fresh price on every worker")
        # the cache lives on the master the sentinels named
        assert cmd(m, "DBSIZE") == 0   # db 0: REDIS_URL said /2
        assert cmd(m, "INFO", "keyspace").find("db2:keys=") >= 0
        assert cmd(topo.other(m), "ROLE")[0] == "slave"
    finally:
        e.close()
        topo.close()


def failover_under_load(scenario, do_switch, prepare=None):
    topo = Topology()
    e = engine_for(topo)
    watch = None
    try:
        warm(e)
        old = topo.master_port()
        new = topo.other(old)
        counter_key = f"{e.env['REDIS_KEY_PREFIX']}test:counter"
        # the load runs for 8 s, and on to 3 s past the switch when the
        # sentinels take longer (an election they split is retried after
        # twice failover-timeout): at most 40 s
        t_start = time.monotonic()
        load = Load(e.port, product_reads, conns=4, duration=40).start()
        # writes: /test/redis INCRs a key, one request every ~10 ms
        writes = Load(e.port, lambda i: ("GET", "/test/redis", None), conns=1, duration=40, pause=0.01,
                      keep_body=True).start()
        time.sleep(1.5)
        if prepare:
            prepare(topo)
        watch = SwitchWatch(topo.sentinel_ports[1])
        t_fault = time.monotonic()
        do_switch(topo, old)
        wait_until(lambda: watch.at is not None, 30, 0.01, "+switch-master")
        t_switch = watch.at
        time.sleep(max(0.0, max(t_switch + 3.0, t_start + 8.0) - time.monotonic()))
        load.stop()
        writes.stop()
        recs = load.join(30)
        wrecs = writes.join(30)
        bad = [x for x in recs if x.status != 200]
        after = [x for x in recs if x.t0 >= t_switch + 1.0]
        bad_after = [x for x in after if x.status != 200]
        first_ok = min((x.t1 for x in wrecs if x.status == 200 and x.t0 >= t_switch), default=None)
        to_write = (first_ok - t_switch) if first_ok else None
        failed_writes = [x for x in wrecs if x.status != 200]
        s = summary(recs)
        print(f"     {s}; switch {t_switch - t_fault:.2f} s after the fault ({watch.payload}); "
              f"first write on the new master {to_write * 1000 if to_write is not None else -1:.0f} ms after it; "
              f"writes failed {len(failed_writes)} of {len(wrecs)}")
        slow = sorted(recs, key=lambda x: -x.latency)[:3]
        print("     slowest reads (start after the fault s, ms, X-Cache): " +
              ", ".join(f"({x.t0 - t_fault:.2f}, {x.latency * 1000:.0f}, {x.xcache})" for x in slow))
        # writes land on the new master: its counter is the last value the engine returned
        last = e.json("GET", "/test/redis")
        assert last[0] == 200, last
        on_new = int(cmd(new, "GET", counter_key))
        assert cmd(new, "ROLE")[0] == "master"
        _, _, h = e.json("GET", "/health")
        sent = h["redis"]["sentinel"]
        log = e.log_text()
        flushed = log.count(f"redis master is now 127.0.0.1:{new}: L1 caches flushed")
        by_msg = log.count(f"to 127.0.0.1:{new} (+switch-master)")
        by_round = log.count(f"to 127.0.0.1:{new} (discovery)")
        ok1 = FIG.add(scenario, "failed product reads (all)", f"{len(bad)} of {len(recs)}", "0", not bad)
        ok2 = FIG.add(scenario, "failed product reads 1 s after the switch", len(bad_after), "0", not bad_after)
        ok3 = FIG.add(scenario, "switch -> first write on new master ms",
                      round(to_write * 1000) if to_write is not None else "none", "< 1000",
                      to_write is not None and to_write < 1.0)
        FIG.add(scenario, "fault -> +switch-master s", round(t_switch - t_fault, 2), "", None)
        FIG.add(scenario, "failed writes (/test/redis INCR)", f"{len(failed_writes)} of {len(wrecs)}", "", None)
        ok4 = FIG.add(scenario, "workers that purged L1 on the switch", flushed, "2", flushed == 2)
        FIG.add(scenario, "p99 read latency ms", s["p99_ms"], "", None)
        FIG.add(scenario, "workers switched by +switch-master / by a discovery round",
                f"{by_msg} / {by_round}", "", None)
        assert ok1 or ok2, [(round(x.t0 - t_switch, 3), x.status, x.error) for x in bad[:5]]
        assert ok2, [(round(x.t0 - t_switch, 3), x.status, x.error) for x in bad_after[:5]]
        assert ok3, to_write
        assert ok4, flushed
        assert on_new == last[2]["counter"], (on_new, last[2])
        assert sent["address"] == f"127.0.0.1:{new}" and sent["switches"] >= 1 and sent["last_switch"], sent
        assert h["redis"]["status"] == "up", h["redis"]
    finally:
        if watch:
            watch.close()
        e.close()
        topo.close()


def test_sentinel_failover_under_load():
    failover_under_load("SENTINEL FAILOVER under reads",
                        lambda topo, old: cmd(topo.sentinel_ports[0], "SENTINEL", "FAILOVER", MASTER))


def test_master_killed_under_load():
    failover_under_load("master SIGKILLed under reads", lambda topo, old: topo.kill(old))


def test_master_killed_with_the_first_sentinel_frozen():
    """The engine's first sentinel (the one it subscribes to) is frozen
    (SIGSTOP) before the master dies: no +switch-master reaches the engine;
    the failed data connection starts discovery rounds, the frozen sentinel
    times out (REDIS_TIMEOUT_MS), the next answers and moves to the front."""
    def freeze(topo):
        topo.procs[topo.sentinel_ports[0]].send_signal(signal.SIGSTOP)
    failover_under_load("master SIGKILLed, first sentinel frozen", lambda topo, old: topo.kill(old), freeze)


def test_wrong_master_name_is_a_clear_error():
    topo = Topology()
    e = engine_for(topo, {"REDIS_SENTINEL_MASTER": "nosuchmaster"}, wait_redis=False)
    try:
        def reported():   # by every worker: 6 requests in a row
            return all("nosuchmaster" in str(e.json("GET", "/health")[2]["redis"]["sentinel"].get("error"))
                       for _ in range(6))
        wait_until(reported, 15, what="the error in /health of every worker")
        st, _, doc = e.json("GET", "/health")
        r = doc["redis"]
        assert r["status"] == "down" and doc["status"] == "degraded", doc
        assert r["sentinel"]["master"] == "nosuchmaster" and "REDIS_SENTINEL_MASTER" in r["sentinel"]["error"], r
        # reads still work from the database
        assert e.get("/api/products/p-0001")[0] == 200
        log = e.log_text()
        assert "no sentinel knows a master named" in log and "nosuchmaster" in log, log[-2000:]
        assert e.proc.poll() is None
    finally:
        e.close()
        topo.close()


def test_bad_configuration_is_a_startup_error():
    for env, var in [({"REDIS_SENTINELS": "127.0.0.1"}, "REDIS_SENTINELS:"),
                     ({"REDIS_SENTINELS": "127.0.0.1:26379,,x:1"}, "REDIS_SENTINELS:"),
                     ({"REDIS_SENTINELS": "127.0.0.1:99999"}, "REDIS_SENTINELS:"),
                     ({"REDIS_SENTINELS": "127.0.0.1:26379"}, "REDIS_SENTINEL_MASTER:")]:
        e = Engine(1, env=env, start=False)
        try:
            out = subprocess.run([harness.BIN, "serve"], env=e.env, cwd=harness.SRC, capture_output=True,
                                 timeout=20, text=True)
            assert out.returncode != 0 and var in (out.stderr + out.stdout), (env, out.returncode, out.stderr)
        finally:
            e.close()


def main():
    t = Runner()
    t.run("catalogue through sentinel: GET/POST/PUT, HIT from the master it names",
          test_catalogue_through_sentinel)
    t.run("SENTINEL FAILOVER under reads: 0 failed reads, first write on the new master < 1 s",
          test_sentinel_failover_under_load)
    t.run("master SIGKILLed under reads: 0 failed reads, first write on the new master < 1 s",
          test_master_killed_under_load)
    t.run("master SIGKILLed with the engine's first sentinel frozen: discovery rounds find the new master < 1 s",
          test_master_killed_with_the_first_sentinel_frozen)
    t.run("wrong master name: a clear error in the log and /health, no crash", test_wrong_master_name_is_a_clear_error)
    t.run("bad REDIS_SENTINELS / missing master: startup errors naming the variable",
          test_bad_configuration_is_a_startup_error)
    FIG.write()
    t.done()


if __name__ == "__main__":
    main()
