"""cmake --install: the binary, the Lua library, the default policies, the
migrations, the core library and its public header; an installed engine run
from elsewhere finds its files under its prefix (bin/../share/jollyjet)."""
import os
import shutil
import signal
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

BUILD = os.path.dirname(os.path.abspath(harness.BIN))
PREFIX = tempfile.mkdtemp(prefix="jj-install-")
WORK = tempfile.mkdtemp(prefix="jj-install-cwd-")   # an empty working directory: no lua/, policies/ here
INSTALLED = os.path.join(PREFIX, "bin", "jollyjet")
CONFIG_VARS = ("LUA_DIR", "POLICY_DIR", "MIGRATIONS_DIR", "REDIS_URL")


def clean_env(**extra):
    env = {k: v for k, v in os.environ.items() if k not in CONFIG_VARS}
    env.update({"DB_PATH": os.path.join(WORK, "var", "jj.db"), "PID_FILE": os.path.join(WORK, "var", "jj.pid"),
                "LOG_LEVEL": "warn"})
    if harness.PG_URL:   # the PostgreSQL pass: a database of its own
        env["DATABASE_URL"] = harness.pg_database(f"jj_install_{os.getpid()}")
    env.update(extra)
    return env


def run(args, **kw):
    return subprocess.run(args, capture_output=True, text=True, timeout=120, **kw)


def test_cmake_install_puts_everything_under_the_prefix():
    r = run(["cmake", "--install", BUILD, "--prefix", PREFIX])
    assert r.returncode == 0, r.stdout + r.stderr
    for rel in ("bin/jollyjet", "lib/libjollyjet_core.a", "include/jollyjet.h",
                "share/jollyjet/lua/jollyjet/app.lua", "share/jollyjet/lua/handlers/products.lua",
                "share/jollyjet/policies/cache.lua", "share/jollyjet/migrations/001_init.sql",
                "share/jollyjet/lua/static/dashboard.html"):
        assert os.path.exists(os.path.join(PREFIX, rel)), f"{rel} not installed"
    assert os.access(INSTALLED, os.X_OK)


def test_the_public_header_stands_alone():
    cc = shutil.which("cc") or shutil.which("gcc")
    assert cc, "no C compiler"
    cflags = run(["pkg-config", "--cflags", "lua5.4"]).stdout.split()
    src = os.path.join(WORK, "uses_header.c")
    with open(src, "w") as f:
        f.write("#include <jollyjet.h>\nint main(void) { jj_embed_free(NULL); return 0; }\n")
    r = run([cc, "-std=c11", "-Wall", "-Wextra", "-Werror", "-fsyntax-only", "-I", os.path.join(PREFIX, "include")]
            + cflags + [src])
    assert r.returncode == 0, r.stderr


def test_help_lists_every_command_and_exits_0():
    r = run([INSTALLED, "help"], cwd=WORK, env=clean_env())
    assert r.returncode == 0, r.stderr
    for cmd in ("serve", "check", "reload", "version", "help"):
        assert f"  {cmd}" in r.stdout, f"help does not list {cmd}:\n{r.stdout}"
    r = run([INSTALLED, "version"], cwd=WORK, env=clean_env())
    assert r.returncode == 0 and r.stdout.startswith("jollyjet "), r.stdout


def test_installed_check_finds_its_files_from_another_directory():
    r = run([INSTALLED, "check"], cwd=WORK, env=clean_env())
    assert r.returncode == 0, r.stdout + r.stderr
    share = os.path.join(os.path.realpath(PREFIX), "share", "jollyjet")
    assert os.path.join(share, "lua") in r.stdout and os.path.join(share, "policies") in r.stdout, r.stdout


def test_explicit_directories_still_win():
    r = run([INSTALLED, "check"], cwd=WORK, env=clean_env(LUA_DIR=os.path.join(WORK, "nowhere")))
    assert r.returncode != 0 and "nowhere" in (r.stdout + r.stderr), r.stdout + r.stderr


def test_installed_serve_answers_health_and_serves_the_migrated_catalogue():
    redis = harness.Redis()
    port = harness.free_port()
    log = open(os.path.join(WORK, "serve.log"), "wb")
    p = subprocess.Popen([INSTALLED, "serve"], cwd=WORK, stdout=log, stderr=log, env=clean_env(
        PORT=str(port), HOST="127.0.0.1", WORKERS="1", WATCH="false", REDIS_HOST="127.0.0.1",
        REDIS_PORT=str(redis.port), REDIS_KEY_PREFIX=f"inst{port}:", LOG_LEVEL="info"))
    harness._procs.append(p)
    try:
        eng = harness.Engine.__new__(harness.Engine)   # only its HTTP helpers
        eng.port = port
        harness.wait_until(lambda: eng.get("/health", timeout=1)[0] == 200, 20, 0.05, "installed engine /health")
        status, _, body = eng.json("GET", "/health")
        assert status == 200 and body["database"]["status"] == "up", body
        status, _, body = eng.json("GET", "/api/products/p-0001")
        assert status == 200 and body["id"] == "p-0001", (status, body)
        # the pages read from the installed share/jollyjet/lua
        for path in ("/dashboard", "/docs", "/openapi.json"):
            status, hdrs, body = eng.get(path)
            assert status == 200 and len(body) > 1000, (path, status)
        with open(os.path.join(harness.SRC, "lua", "static", "dashboard.html"), "rb") as f:
            assert eng.get("/dashboard")[2] == f.read()
    finally:
        p.send_signal(signal.SIGTERM)
        rc = p.wait(timeout=30)
        log.close()
        redis.close()
    with open(os.path.join(WORK, "serve.log"), "rb") as f:
        text = f.read().decode("utf-8", "replace")
    for mark in harness.Engine.SANITIZER_MARKS:
        assert mark not in text, text[-4000:]
    assert rc == 0, f"exit {rc}\n{text[-4000:]}"


if __name__ == "__main__":
    r = harness.Runner()
    try:
        r.run_all(dict(globals()))
    finally:
        shutil.rmtree(PREFIX, ignore_errors=True)
        shutil.rmtree(WORK, ignore_errors=True)
    r.done()
