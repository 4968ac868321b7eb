/* jj_test.h: the smallest test harness that can fail. Each unit test is one
 * executable; main() ends with `return jj_test_done();` which prints the
 * plain "N passed, N failed" line and exits non-zero on any failure. */
#ifndef JJ_TEST_H
#define JJ_TEST_H

#include <stdio.h>
#include <string.h>

static int jj_t_pass, jj_t_fail;

#define CHECK(c) do { if (c) jj_t_pass++; else { jj_t_fail++; \
    fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #c); } } while (0)
#define CHECK_INT(a, b) do { long long _a = (long long)(a), _b = (long long)(b); \
    if (_a == _b) jj_t_pass++; else { jj_t_fail++; \
    fprintf(stderr, "%s:%d: %s == %lld, expected %lld\n", __FILE__, __LINE__, #a, _a, _b); } } while (0)
#define CHECK_STR(a, b) do { const char *_a = (a), *_b = (b); \
    if (_a && _b && strcmp(_a, _b) == 0) jj_t_pass++; else { jj_t_fail++; \
    fprintf(stderr, "%s:%d: %s == \"%s\", expected \"%s\"\n", __FILE__, __LINE__, #a, \
            _a ? _a : "(null)", _b ? _b : "(null)"); } } while (0)
#define CHECK_MEM(a, alen, b) do { size_t _l = (alen); const char *_b = (b); \
    if (_l == strlen(_b) && memcmp((a), _b, _l) == 0) jj_t_pass++; else { jj_t_fail++; \
    fprintf(stderr, "%s:%d: %s == \"%.*s\", expected \"%s\"\n", __FILE__, __LINE__, #a, \
            (int)_l, (const char *)(a), _b); } } while (0)

static inline int jj_test_done(void) {
    printf("%d passed, %d failed\n", jj_t_pass, jj_t_fail);
    return jj_t_fail ? 1 : 0;
}

#endif
