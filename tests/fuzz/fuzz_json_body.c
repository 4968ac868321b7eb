/* fuzz_json_body.c: libFuzzer target for the product body path: the bytes
 * of a POST/PUT/PATCH body through handlers.products.decode_object (lua-cjson
 * with the handler's settings) and jollyjet.catalog.validate, the same Lua
 * code a request runs, minus Redis and the database (fuzz_json_body.lua
 * checks what the validated values promise).
 *
 * Input: byte 0 bit 0 = partial (an update), the rest is the body.
 *   cmake -S . -B build-fuzz -DCMAKE_C_COMPILER=clang -DJJ_FUZZ=ON -DJJ_SANITIZE=ON
 *   cmake --build build-fuzz --target fuzz_json_body
 *   build-fuzz/tests/fuzz_json_body -dict=tests/fuzz/json.dict tests/fuzz/corpus/json_body
 */
#include "fuzz_lua.h"

static lua_State *L;
static int driver;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!L) L = fuzz_lua_open("fuzz_json_body", &driver);
    if (size == 0) return 0;
    lua_pushlstring(L, (const char *)data + 1, size - 1);
    lua_pushboolean(L, data[0] & 1);
    fuzz_lua_call(L, driver, 2);
    return 0;
}
