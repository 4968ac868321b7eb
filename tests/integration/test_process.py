"""Processes: graceful drain on SIGTERM, worker restart, start-up errors
that name the variable, the CLI."""
import concurrent.futures as cf
import os
import signal
import subprocess
import time

from harness import BIN, SRC, Engine, Redis, Runner, db_sql, free_port, wait_until


def test_sigterm_drains_in_flight_requests(r):
    e = Engine(r.port)
    try:
        with cf.ThreadPoolExecutor(16) as ex:
            futs = [ex.submit(e.get, "/test/sleep?ms=1500", timeout=20) for _ in range(16)]
            time.sleep(0.5)
            t0 = time.monotonic()
            e.signal(signal.SIGTERM)
            results = [f.result()[0] for f in futs]
        assert results == [200] * 16, results
        rc = e.proc.wait(timeout=20)
        assert rc == 0, rc
        assert time.monotonic() - t0 < 10
        # new connections are refused after the drain
        try:
            e.get("/health", timeout=1)
            raise AssertionError("still accepting after SIGTERM")
        except OSError:
            pass
    finally:
        e.close()


def test_dead_worker_is_restarted(r):
    e = Engine(r.port, workers=2)
    try:
        pids = set()
        for _ in range(30):
            out = subprocess.run(["pgrep", "-P", str(e.proc.pid)], capture_output=True, text=True)
            pids = set(out.stdout.split())
            if len(pids) == 2:
                break
            time.sleep(0.1)
        assert len(pids) == 2, pids
        victim = int(sorted(pids)[0])
        os.kill(victim, signal.SIGKILL)

        def restarted():
            out = subprocess.run(["pgrep", "-P", str(e.proc.pid)], capture_output=True, text=True)
            now = set(out.stdout.split())
            return len(now) == 2 and str(victim) not in now
        wait_until(restarted, 5, 0.05, "worker restart")
        for _ in range(20):
            assert e.get("/test/ok")[0] == 200
        assert "killed by signal 9" in e.log_text()
    finally:
        e.close()


def run_serve(env_over, timeout=20):
    env = dict(os.environ)
    env.update({"PORT": str(free_port()), "WORKERS": "1"})
    env.update(env_over)
    return subprocess.run([BIN, "serve"], env=env, capture_output=True, text=True, timeout=timeout, cwd=SRC)


def test_bad_configuration_stops_the_start_naming_the_variable(r):
    for var, value in [("PORT", "http"), ("WORKERS", "-2"), ("REDIS_URL", "mysql://x"),
                       ("LOG_LEVEL", "chatty"), ("REDIS_DB", "42"), ("MAX_BODY_BYTES", "lots")]:
        out = run_serve({var: value})
        assert out.returncode == 2, (var, out.returncode, out.stderr)
        assert f"configuration error: {var}:" in out.stderr, out.stderr


def test_broken_lua_at_start_fails_the_start(r):
    e = Engine(r.port, start=False)
    try:
        with open(os.path.join(e.policy_dir, "cache.lua"), "w") as f:
            f.write("return {")
        env = dict(e.env)
        out = subprocess.run([BIN, "serve"], env=env, capture_output=True, text=True, timeout=30, cwd=SRC)
        assert out.returncode != 0
        assert "cache.lua:1:" in out.stderr, out.stderr[-2000:]
    finally:
        e.close()


def test_cli_version_help_and_unknown(r):
    out = subprocess.run([BIN, "version"], capture_output=True, text=True, timeout=10)
    assert out.returncode == 0 and out.stdout.startswith("jollyjet ")
    out = subprocess.run([BIN, "help"], capture_output=True, text=True, timeout=10)
    assert out.returncode == 0 and "serve" in out.stdout and "check" in out.stdout
    out = subprocess.run([BIN, "frobnicate"], capture_output=True, text=True, timeout=10)
    assert out.returncode == 2 and "unknown command" in out.stderr


def test_reload_command_signals_the_master(r):
    e = Engine(r.port)
    try:
        g0 = e.json("GET", "/test/policy")[2]["generation"]
        out = subprocess.run([BIN, "reload"], env=e.env, capture_output=True, text=True, timeout=10)
        assert out.returncode == 0, out.stderr
        wait_until(lambda: all(e.json("GET", "/test/policy")[2]["generation"] > g0 for _ in range(6)), 5,
                   what="generation bump")
    finally:
        e.close()


def test_database_migrated_at_start(r):
    e = Engine(r.port)
    try:
        if e.env.get("DATABASE_URL"):   # PostgreSQL: each migration once in schema_migrations
            tables = {row[0] for row in db_sql(e, "SELECT table_name FROM information_schema.tables "
                                                  "WHERE table_schema = 'public'")}
            assert {"products", "wishlist", "schema_migrations"} <= tables, tables
            versions = [row[0] for row in db_sql(e, "SELECT version FROM schema_migrations ORDER BY version")]
            assert versions and versions == sorted(set(versions)) and versions[0] == 1, versions
            return
        import sqlite3
        con = sqlite3.connect(e.env["DB_PATH"])
        tables = {row[0] for row in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert {"products", "wishlist"} <= tables, tables
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert con.execute("PRAGMA user_version").fetchone()[0] >= 1
        con.close()
    finally:
        e.close()


def main():
    t = Runner()
    r = Redis()
    try:
        t.run_all(globals(), r)
    finally:
        r.close()
    t.done()


if __name__ == "__main__":
    main()
