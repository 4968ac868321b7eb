"""tests/smoke.sh against a freshly started engine: rate limiting on, with a
policy that gives one route a small limit, so the 429 check runs for real;
and against an engine with RATELIMIT_ENABLED=false, where the script must
say SKIP and fail unless SMOKE_ALLOW_SKIP=1."""
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

SMOKE = os.path.join(harness.SRC, "tests", "smoke.sh")
RL_PATH = "/api/products?search=smoke"
RL_LIMIT = 5

# Rate limits of the smoke run: the list search gets a small budget.
RATELIMITS = f"""return {{
  rules = {{
    {{ name = "api", limit = 1000, period = 60, prefix = "/api/", key = "ip" }},
    {{ name = "smoke_search", limit = {RL_LIMIT}, period = 60, route = "/api/products", methods = {{ "GET" }},
      query = {{ "search" }}, key = "ip" }},
  }},
}}
"""


def has_ratelimiting(engine):
    return os.path.exists(os.path.join(engine.lua_dir, "jollyjet", "schemas", "ratelimits.lua"))


def smoke(engine, **env):
    e = dict(os.environ, SMOKE_RATELIMIT_PATH=RL_PATH, SMOKE_RATELIMIT_MAX="50")
    e.pop("SMOKE_ALLOW_SKIP", None)
    e.update(env)
    r = subprocess.run(["bash", SMOKE, f"http://127.0.0.1:{engine.port}"], capture_output=True, text=True,
                       timeout=180, env=e)
    sys.stdout.write("".join("    | " + line + "\n" for line in r.stdout.splitlines()))
    if r.stderr.strip():
        sys.stdout.write("".join("    ! " + line + "\n" for line in r.stderr.splitlines()))
    return r


def lines(r, prefix):
    return [line for line in r.stdout.splitlines() if line.startswith(prefix)]


def test_every_check_passes_against_a_fresh_engine(redis):
    engine = harness.Engine(redis.port, workers=2, env={"RATELIMIT_ENABLED": "true"}, start=False)
    try:
        if has_ratelimiting(engine):
            with open(os.path.join(engine.policy_dir, "ratelimits.lua"), "w") as f:
                f.write(RATELIMITS)
        engine.start()
        r = smoke(engine)
        assert not lines(r, "FAIL"), "failed checks:\n" + "\n".join(lines(r, "FAIL"))
        assert not lines(r, "SKIP"), "skipped checks (a feature missing from this tree?):\n" + "\n".join(lines(r, "SKIP"))
        assert r.returncode == 0, f"exit {r.returncode}"
        for name in ("health", "product create", "cache read", "invalidation", "delete", "session",
                     "ratelimit headers", "ratelimit 429"):
            assert any(line.startswith(f"PASS {name}:") for line in r.stdout.splitlines()), f"no PASS {name}"
        assert f"request {RL_LIMIT + 1} answered 429" in r.stdout, "the small limit did not apply"
    finally:
        engine.close()


def test_with_rate_limiting_off_the_checks_say_skip(redis):
    engine = harness.Engine(redis.port, workers=1, env={"RATELIMIT_ENABLED": "false"})
    try:
        r = smoke(engine)
        skipped = lines(r, "SKIP ratelimit")
        assert len(skipped) == 2 and "rate limiting is off" in skipped[0], r.stdout
        assert r.returncode == 1, "a SKIP must fail the run without SMOKE_ALLOW_SKIP=1"
        r = smoke(engine, SMOKE_ALLOW_SKIP="1")
        assert r.returncode == 0 and not lines(r, "FAIL"), r.stdout
    finally:
        engine.close()


def test_an_engine_that_does_not_answer_fails_at_once():
    r = smoke(type("E", (), {"port": harness.free_port()})())
    assert r.returncode == 1 and lines(r, "FAIL health"), r.stdout


if __name__ == "__main__":
    redis = harness.Redis()
    runner = harness.Runner()
    try:
        runner.run_all(dict(globals()), redis)
        runner.run_all(dict(globals()))
    finally:
        redis.close()
    runner.done()
