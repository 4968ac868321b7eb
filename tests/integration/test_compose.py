"""docker-compose.yml, Dockerfile and the documentation of the configuration.

No Docker needed: the files are parsed and checked for what deployment relies
on (a persistent, password-protected Redis that never evicts keys without a
TTL, a protected monitoring UI, a persistent PostgreSQL with its password
from .env, two engine instances sharing both, an engine image that is
Debian 12, Debian packages only, non-root and health-checked), and every
environment variable the engine reads must be documented in .env.example and
README.md. When docker compose (or Debian's docker-compose) is installed,
`docker compose config -q` must accept the file too.

Needs PyYAML (Debian's python3-yaml). When the first python3 on PATH has no
yaml module, the test re-runs itself with /usr/bin/python3."""
import os
import re
import shlex
import sys

try:
    import yaml
except ImportError:  # pragma: no cover - depends on the machine
    if os.path.exists("/usr/bin/python3") and os.path.realpath(sys.executable) != os.path.realpath("/usr/bin/python3") \
            and not os.environ.get("JJ_COMPOSE_REEXEC"):
        os.environ["JJ_COMPOSE_REEXEC"] = "1"
        os.execv("/usr/bin/python3", ["/usr/bin/python3", os.path.abspath(__file__)] + sys.argv[1:])
    print("FAIL PyYAML is missing: install python3-yaml (engine/scripts/deps.sh test)")
    sys.exit(1)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

SRC = harness.SRC

# Read by the engine but not configuration: the master hands each worker
# the write end of its readiness pipe through it.
INTERNAL = {"JJ_READY_FD"}

# getenv("NAME") anywhere in the C core, and config.c's helpers, which take
# the variable name as a string literal: get_str(&e, "NAME", ...),
# get_long/get_double/get_bool(&e, "NAME", ...), var(&e, "NAME").
C_GETENV = re.compile(r'\b(?:secure_)?getenv\s*\(\s*"([A-Za-z_][A-Za-z0-9_]*)"')
C_HELPER = re.compile(r'\b(?:get_[a-z]+|var)\s*\(\s*&\s*\w+\s*,\s*"([A-Z_][A-Z0-9_]*)"')
LUA_GETENV = re.compile(r'\bos\.getenv\s*\(?\s*["\']([A-Za-z_][A-Za-z0-9_]*)["\']')
COMPOSE_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)")


def read(*parts):
    with open(os.path.join(SRC, *parts), encoding="utf-8") as f:
        return f.read()


def engine_variables():
    names = set()
    src = os.path.join(SRC, "engine", "src")
    for f in sorted(os.listdir(src)):
        if f.endswith(".c"):
            text = read("engine", "src", f)
            names |= set(C_GETENV.findall(text)) | set(C_HELPER.findall(text))
    for root, _, files in os.walk(os.path.join(SRC, "lua")):
        for f in files:
            if f.endswith(".lua"):
                with open(os.path.join(root, f), encoding="utf-8") as fh:
                    names |= set(LUA_GETENV.findall(fh.read()))
    return names - INTERNAL


def compose():
    return yaml.safe_load(read("docker-compose.yml"))


def tokens(command):
    if command is None:
        return []
    if isinstance(command, str):
        return shlex.split(command)
    return [str(c) for c in command]


def option(toks, name):
    """The value after --name in a redis-server command line."""
    for i, t in enumerate(toks):
        if t == "--" + name and i + 1 < len(toks):
            return toks[i + 1]
    return None


def env_of(service):
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(e.split("=", 1) if "=" in e else (e, None) for e in env)
    return {k: ("" if v is None else str(v)) for k, v in env.items()}


def engines():
    """The services built from the Dockerfile: the engine instances."""
    return [n for n, s in compose()["services"].items() if "build" in s]


def services_by_role():
    svcs = compose()["services"]
    redis = [n for n, s in svcs.items() if str(s.get("image", "")).startswith("redis:")]
    pg = [n for n, s in svcs.items() if str(s.get("image", "")).startswith("postgres:")]
    engine = engines()
    assert len(redis) == 1, f"expected one service on a redis image, got {redis}"
    assert len(engine) >= 1, f"expected a service built from the Dockerfile, got {engine}"
    ui = [n for n in svcs if n not in redis + engine + pg]
    return svcs, redis[0], engine[0], ui


def healthcheck_test(service):
    hc = service.get("healthcheck") or {}
    assert not hc.get("disable"), "healthcheck disabled"
    t = hc.get("test")
    assert t, "no healthcheck test"
    return " ".join(t) if isinstance(t, list) else str(t)


def documented_in_readme():
    text = read("README.md")
    m = re.search(r"^## Configuration.*?$(.*?)^## ", text, re.S | re.M)
    assert m, "README.md has no '## Configuration' section"
    names = set()
    for line in m.group(1).splitlines():
        if line.startswith("|") and not line.startswith("|---"):
            first = line.split("|")[1]
            names |= set(re.findall(r"`([A-Z_][A-Z0-9_]*)`", first))
    return names


def documented_in_env_example():
    names = set()
    for line in read(".env.example").splitlines():
        m = re.match(r"^\s*#?\s*([A-Z_][A-Z0-9_]*)=", line)
        if m:
            names.add(m.group(1))
    return names


# ------------------------------------------------------------------ redis

def test_redis_is_7_with_aof_on_a_named_volume():
    svcs, r, _, _ = services_by_role()
    s = svcs[r]
    assert re.match(r"^redis:7(\.|-|$)", s["image"]), f"redis image must be 7.x, got {s['image']}"
    toks = tokens(s.get("command"))
    assert option(toks, "appendonly") == "yes", f"appendonly yes missing: {toks}"
    named = compose().get("volumes") or {}
    ok = False
    for v in s.get("volumes") or []:
        if isinstance(v, str):
            src, _, rest = v.partition(":")
            target = rest.split(":")[0]
        else:
            src, target = v.get("source"), v.get("target")
        if target == "/data" and src in named:
            ok = True
    assert ok, f"no named volume mounted at /data: {s.get('volumes')}"


def test_redis_password_comes_from_the_environment():
    svcs, r, _, _ = services_by_role()
    pw = option(tokens(svcs[r].get("command")), "requirepass")
    assert pw and COMPOSE_VAR.match(pw), f"requirepass must be ${{VAR}} from .env, got {pw!r}"


def test_redis_memory_policy_never_evicts_keys_without_a_ttl():
    svcs, r, _, _ = services_by_role()
    toks = tokens(svcs[r].get("command"))
    assert option(toks, "maxmemory"), "maxmemory missing"
    policy = option(toks, "maxmemory-policy")
    assert policy and policy.startswith("volatile-"), \
        f"maxmemory-policy must be volatile-* (tag generations and fences have no TTL), got {policy!r}"


def test_redis_has_a_healthcheck():
    svcs, r, _, _ = services_by_role()
    assert "ping" in healthcheck_test(svcs[r]).lower()


# --------------------------------------------------------------------- ui

def test_monitoring_ui_is_protected_by_credentials_from_env():
    svcs, r, _, ui = services_by_role()
    assert ui, "no monitoring UI service"
    for name in ui:
        env = env_of(svcs[name])
        users = [k for k in env if re.search(r"USER", k)]
        pwds = [k for k in env if re.search(r"PASS", k)]
        assert users and pwds, f"{name}: no user/password for its HTTP access: {sorted(env)}"
        for k in users + pwds:
            assert COMPOSE_VAR.search(env[k]), f"{name}: {k} must come from the environment, got {env[k]!r}"
        for p in svcs[name].get("ports") or []:
            assert str(p).startswith("127.0.0.1:"), f"{name}: publish the UI on loopback only, got {p}"


# ----------------------------------------------------------------- engine

def test_engine_is_built_from_the_dockerfile_with_a_health_check():
    for e in engines():
        check_engine_build(e)


def check_engine_build(e):
    svcs, r, _, _ = services_by_role()
    s = svcs[e]
    build = s["build"]
    ctx = build if isinstance(build, str) else build.get("context", ".")
    dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
    assert os.path.exists(os.path.join(SRC, ctx, dockerfile)), f"{ctx}/{dockerfile} not found"
    assert "/health" in healthcheck_test(s), "the engine healthcheck must hit /health"
    deps = s.get("depends_on") or {}
    assert r in deps, f"engine must depend on {r}"


def test_engine_environment_is_wired_to_redis():
    for e in engines():
        check_engine_redis(e)


def check_engine_redis(e):
    svcs, r, _, _ = services_by_role()
    env = env_of(svcs[e])
    known = engine_variables()
    unknown = sorted(k for k in env if k not in known)
    assert not unknown, f"engine environment sets variables the engine does not read: {unknown}"
    url = env.get("REDIS_URL", "")
    if url:
        assert re.match(rf"^redis://[^@]*\$\{{REDIS_PASSWORD[^}}]*\}}@{re.escape(r)}(:|/|$)", url), \
            f"REDIS_URL must point at the {r} service with the password from .env, got {url!r}"
    else:
        assert env.get("REDIS_HOST") == r, f"REDIS_HOST must be {r}"
        assert COMPOSE_VAR.search(env.get("REDIS_PASSWORD", "")), "REDIS_PASSWORD must come from .env"


# ------------------------------------------------------------- postgres

def postgres_service():
    svcs = compose()["services"]
    pg = [n for n, s in svcs.items() if str(s.get("image", "")).startswith("postgres:")]
    assert len(pg) == 1, f"expected one service on a postgres image, got {pg}"
    return pg[0], svcs[pg[0]]


def test_postgres_is_15_on_a_named_volume_with_its_password_from_env():
    name, s = postgres_service()
    assert re.match(r"^postgres:15(\.|-|$)", s["image"]), f"postgres image must be 15.x, got {s['image']}"
    env = env_of(s)
    assert COMPOSE_VAR.match(env.get("POSTGRES_PASSWORD", "")), \
        f"POSTGRES_PASSWORD must be ${{VAR}} from .env, got {env.get('POSTGRES_PASSWORD')!r}"
    named = compose().get("volumes") or {}
    mounts = [v.partition(":")[::2] if isinstance(v, str) else (v.get("source"), v.get("target"))
              for v in s.get("volumes") or []]
    assert any(src in named and tgt.split(":")[0] == "/var/lib/postgresql/data" for src, tgt in mounts), mounts
    assert "pg_isready" in healthcheck_test(s)


def test_two_engine_instances_share_postgres_and_redis():
    svcs = compose()["services"]
    pg, pgs = postgres_service()
    _, r, _, _ = services_by_role()
    names = engines()
    assert len(names) >= 2, f"expected two engine instances, got {names}"
    urls, prefixes, ports = set(), set(), []
    user, db = env_of(pgs).get("POSTGRES_USER", "postgres"), env_of(pgs).get("POSTGRES_DB")
    for e in names:
        env = env_of(svcs[e])
        url = env.get("DATABASE_URL", "")
        assert re.match(rf"^postgres(ql)?://{re.escape(user)}:\$\{{POSTGRES_PASSWORD[^}}]*\}}@{re.escape(pg)}(:\d+)?/"
                        rf"{re.escape(db or user)}(\?|$)", url), f"{e}: DATABASE_URL must point at {pg}, got {url!r}"
        deps = svcs[e].get("depends_on") or {}
        assert pg in deps and r in deps, f"{e} must depend on {pg} and {r}"
        if isinstance(deps, dict):
            assert deps[pg].get("condition") == "service_healthy", f"{e}: wait for {pg} to be healthy"
        urls.add(url)
        prefixes.add(env.get("REDIS_KEY_PREFIX"))
        ports += [str(p).rsplit(":", 1)[0] for p in svcs[e].get("ports") or []]
    assert len(urls) == 1 and len(prefixes) == 1, "the instances must share the database and the key prefix"
    assert len(ports) == len(set(ports)), f"each instance needs its own published port: {ports}"


def test_docker_compose_config_accepts_the_file():
    import shutil
    import subprocess
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        cmd = [docker, "compose"]
    elif shutil.which("docker-compose"):   # Debian's docker-compose (v1)
        cmd = [shutil.which("docker-compose")]
    else:
        print("     (neither docker compose nor docker-compose installed: only the YAML checks above ran)")
        return
    env = dict(os.environ, REDIS_PASSWORD="x", POSTGRES_PASSWORD="y", REDIS_UI_USER="u", REDIS_UI_PASSWORD="p")
    out = subprocess.run(cmd + ["-f", os.path.join(SRC, "docker-compose.yml"), "config", "-q"],
                         capture_output=True, text=True, env=env, cwd=SRC, timeout=60)
    assert out.returncode == 0, out.stderr


def test_every_compose_variable_is_in_env_example():
    used = set(COMPOSE_VAR.findall(read("docker-compose.yml")))
    missing = sorted(used - documented_in_env_example())
    assert not missing, f".env.example lacks {missing}"


# ------------------------------------------------------------- Dockerfile

def dockerfile_instructions():
    text = re.sub(r"\\\n", " ", read("Dockerfile"))
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


NOT_DEBIAN = {"pip", "pip3", "pipx", "npm", "yarn", "gem", "cargo", "go", "wget", "curl", "git",
              "add-apt-repository", "snap", "luarocks"}


def test_dockerfile_is_debian_12_debian_packages_non_root_with_healthcheck():
    ins = dockerfile_instructions()
    froms = [rest.split()[0] for word, rest in ins if word == "FROM"]
    assert froms, "no FROM"
    stages = {rest.split()[-1] for word, rest in ins if word == "FROM" and " as " in rest.lower()}
    for f in froms:
        assert f in stages or re.match(r"^debian:(12|bookworm)([-.:@].*)?$", f), f"base image must be Debian 12: {f}"
    for word, rest in ins:
        if word == "RUN":
            # the command of every step of the shell line (a && b; c | d)
            for step in re.split(r"&&|\|\||;|\|", rest):
                cmd = step.split()
                if not cmd:
                    continue
                assert cmd[0] not in NOT_DEBIAN and not (cmd[0] == "dpkg" and "-i" in cmd), \
                    f"RUN installs or fetches something that is not a Debian package ({cmd[0]}): {rest}"
            assert "sources.list" not in rest, f"RUN changes the apt sources: {rest}"
        if word == "ADD":
            assert "://" not in rest, f"ADD from a URL: {rest}"
    users = [rest.split()[0] for word, rest in ins if word == "USER"]
    assert users, "no USER: the engine must not run as root"
    assert users[-1].split(":")[0] not in ("root", "0"), f"runs as {users[-1]}"
    hc = [rest for word, rest in ins if word == "HEALTHCHECK"]
    assert hc and "/health" in hc[-1], "HEALTHCHECK on /health missing"


# ---------------------------------------------------------- documentation

def test_the_scan_finds_the_engine_variables():
    names = engine_variables()
    for must in ("PORT", "HOST", "REDIS_URL", "REDIS_PASSWORD", "LUA_DIR", "POLICY_DIR", "MIGRATIONS_DIR",
                 "LOG_LEVEL", "ADMIN_TOKEN", "WATCH"):
        assert must in names, f"the scan of engine/src missed {must}: fix the patterns of this test"
    assert len(names) >= 25, sorted(names)


def test_every_engine_variable_is_in_env_example():
    missing = sorted(engine_variables() - documented_in_env_example())
    assert not missing, f".env.example does not list {missing}"


def test_every_engine_variable_is_in_the_readme_configuration_table():
    documented = documented_in_readme()
    missing = sorted(engine_variables() - documented)
    assert not missing, f"README.md's configuration table does not list {missing}"
    stale = sorted(documented - engine_variables())
    assert not stale, f"README.md's configuration table lists variables the engine does not read: {stale}"


if __name__ == "__main__":
    r = harness.Runner()
    r.run_all(dict(globals()))
    r.done()
