/* fuzz_policy_schema.c: libFuzzer target for jollyjet.schema and the
 * policy schemas (every lua/jollyjet/schemas module, with its check function):
 * fuzzed policy files (run in the sandbox policies run in) and JSON-decoded
 * tables must be accepted or refused with an error string, never raise (see
 * fuzz_policy_schema.lua for the properties of an accepted value).
 *
 * Input: byte 0 picks the schema, byte 1 bit 0: 0 = Lua policy source,
 * 1 = JSON; the rest is the text.
 *   build-fuzz/tests/fuzz_policy_schema -dict=tests/fuzz/policy.dict tests/fuzz/corpus/policy_schema
 */
#include "fuzz_lua.h"

static lua_State *L;
static int driver;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!L) L = fuzz_lua_open("fuzz_policy_schema", &driver);
    if (size < 2) return 0;
    lua_pushinteger(L, data[0]);
    lua_pushboolean(L, data[1] & 1);
    lua_pushlstring(L, (const char *)data + 2, size - 2);
    fuzz_lua_call(L, driver, 3);
    return 0;
}
