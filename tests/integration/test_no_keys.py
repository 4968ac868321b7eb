"""No KEYS anywhere: a static check of the sources (the MONITOR check in
test_cache_races proves it at run time)."""
import os
import re

from harness import SRC, Runner

# A KEYS command written as a command name: "KEYS" / 'KEYS' in C or Lua, or a
# call("keys", ...) in Lua. The engine's refusal of KEYS is the one allowed use.
PATTERN = re.compile(r'''["']KEYS["']|(?i:call\(\s*["']keys["'])''')
ALLOWED = ("not allowed", "refuse", "use SCAN", "name_is(")


def test_sources_never_send_keys():
    offenders = []
    for top in ("engine", "lua", "policies"):
        for root, _, files in os.walk(os.path.join(SRC, top)):
            for f in files:
                if f.endswith((".c", ".h", ".lua")):
                    path = os.path.join(root, f)
                    for i, line in enumerate(open(path, encoding="utf-8", errors="replace"), 1):
                        if PATTERN.search(line) and not any(a in line for a in ALLOWED):
                            offenders.append(f"{os.path.relpath(path, SRC)}:{i}: {line.strip()}")
    assert not offenders, offenders


def main():
    t = Runner()
    t.run_all(globals())
    t.done()


if __name__ == "__main__":
    main()
