/* http_chunked.h: decoder of chunked request bodies (RFC 9112 7.1). Pure
 * over bytes like http_parser.h: no allocation, no I/O, no global state;
 * the little it must remember between reads lives in a jj_http_chunked the
 * caller owns. Fuzzed by tests/fuzz/fuzz_http_parser.c.
 */
#ifndef JJ_HTTP_CHUNKED_H
#define JJ_HTTP_CHUNKED_H

#include "http_parser.h"

#include <stddef.h>
#include <stdint.h>

/* Longest chunk-size line (size, extensions, CRLF) accepted; extensions are
 * skipped, never stored, so this only bounds the work a client can cause. */
#define JJ_HTTP_CHUNK_LINE_MAX 4096

typedef struct jj_http_chunked {
    int state;
    int status;               /* once failed: the verdict, repeated by later calls */
    const char *reason;
    uint64_t left;            /* data bytes still to come in the current chunk */
    size_t out;               /* decoded bytes so far, at the start of the buffer */
    size_t line;              /* bytes of the current chunk-size line so far */
    size_t trailer;           /* bytes of the trailer section so far */
} jj_http_chunked;

void jj_http_chunked_init(jj_http_chunked *d);

/* Decodes a chunked body in place. buf[0 .. d->out) is the body decoded so
 * far and buf[d->out .. *len) what arrived since. The call consumes all it
 * can: chunk data is appended to the decoded part, framing (sizes,
 * extensions, CRLFs, trailer fields) is dropped, and what it did not consume
 * is moved down behind the decoded part; *len is updated. So the buffer never
 * holds more than the decoded body plus the bytes after it.
 *
 * Returns JJ_HTTP_INCOMPLETE (everything consumed, more needed), JJ_HTTP_OK
 * (the body ended: d->out decoded bytes at buf[0], then the bytes after the
 * body, a pipelined request, up to *len), or JJ_HTTP_ERROR with *status and
 * *reason: 413 as soon as a chunk size would take the decoded body past
 * max_body, 431 when the trailer section passes max_trailer bytes, 400 for
 * any framing error. Once OK or ERROR, further calls change nothing and
 * repeat the verdict. */
int jj_http_chunked_decode(jj_http_chunked *d, char *buf, size_t *len, size_t max_body,
                           size_t max_trailer, int *status, const char **reason);

#endif
