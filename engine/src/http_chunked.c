/* http_chunked.c: chunked request bodies (RFC 9112 7.1), decoded in place.
 *
 * A byte-driven state machine, so the verdict never depends on how the body
 * was split across reads. Choices worth knowing about, all on the strict
 * side because chunked framing is where request smuggling lives (a proxy in
 * front that reads the framing differently would see other requests):
 *  - every line ends in CRLF: a bare LF or a CR without LF is 400 (the head
 *    parser accepts bare LF; chunk lines do not);
 *  - chunk-size is 1*HEXDIG, at most INT64_MAX; leading zeros are fine;
 *  - chunk extensions (BWS ";" ...) are skipped: any field-value bytes up
 *    to the CRLF, the whole line at most JJ_HTTP_CHUNK_LINE_MAX bytes;
 *  - trailer fields must look like field lines (token ":" value) and are
 *    dropped; the section is bounded by max_trailer (431), and obsolete line
 *    folding is rejected as in the head;
 *  - the decoded size is checked against max_body as soon as a chunk-size
 *    line's digits end, before any of that chunk's data is buffered.
 */
#include "http_chunked.h"

#include <string.h>

enum {
    C_SIZE0,          /* first hex digit of a chunk size */
    C_SIZE,           /* more hex digits, BWS, ';' or CR */
    C_SIZE_BWS,       /* whitespace after the size: more of it, ';' or CR */
    C_EXT,            /* skipping chunk extensions up to CR */
    C_SIZE_LF,        /* LF ending the chunk-size line */
    C_DATA,
    C_DATA_CR,        /* CRLF after the data */
    C_DATA_LF,
    C_TRAILER,        /* start of a trailer line, or CR of the final CRLF */
    C_TRAILER_NAME,
    C_TRAILER_VALUE,
    C_TRAILER_LF,
    C_END_LF,         /* LF of the final CRLF */
    C_DONE,
    C_FAILED
};

static int hexval(unsigned char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* RFC 9110 tchar */
static int is_tchar(unsigned char c) {
    if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) return 1;
    return c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

/* field-value bytes: HTAB, SP, VCHAR, obs-text */
static int is_vchar(unsigned char c) { return c == '\t' || (c >= 0x20 && c != 0x7f); }

void jj_http_chunked_init(jj_http_chunked *d) { memset(d, 0, sizeof *d); }

int jj_http_chunked_decode(jj_http_chunked *d, char *buf, size_t *len, size_t max_body,
                           size_t max_trailer, int *status, const char **reason) {
    size_t n = *len, i = d->out, w = d->out;   /* read at i, write decoded data at w */
    int code = 400;
    const char *why = NULL;

#define FAIL(c, r) do { code = (c); why = (r); goto fail; } while (0)
    while (i < n && d->state != C_DONE && d->state != C_FAILED) {
        unsigned char c = (unsigned char)buf[i];
        if (d->state == C_DATA) {
            size_t take = n - i;
            if ((uint64_t)take > d->left) take = (size_t)d->left;
            if (w != i) memmove(buf + w, buf + i, take);
            w += take;
            i += take;
            d->left -= take;
            if (d->left == 0) d->state = C_DATA_CR;
            continue;
        }
        i++;
        if (d->state <= C_SIZE_LF && ++d->line > JJ_HTTP_CHUNK_LINE_MAX)
            FAIL(400, "chunk size line too long");
        if (d->state >= C_TRAILER && d->state <= C_END_LF && ++d->trailer > max_trailer)
            FAIL(431, "trailer section too large");
        switch (d->state) {
        case C_SIZE0:
        case C_SIZE: {
            int h = hexval(c);
            if (h >= 0) {
                if (d->left > (uint64_t)(INT64_MAX >> 4)) FAIL(400, "chunk size overflows");
                d->left = d->left << 4 | (uint64_t)h;
                d->state = C_SIZE;
                break;
            }
            if (d->state == C_SIZE0) FAIL(400, "invalid chunk size");
            /* The digits ended: refuse an oversized body before its data. */
            if (d->left > (uint64_t)(max_body - (w < max_body ? w : max_body)))
                FAIL(413, "request body too large");
            if (c == '\r') d->state = C_SIZE_LF;
            else if (c == ';') d->state = C_EXT;
            else if (c == ' ' || c == '\t') d->state = C_SIZE_BWS;
            else FAIL(400, c == '\n' ? "chunk size line not ended by CRLF" : "invalid chunk size");
            break;
        }
        case C_SIZE_BWS:
            if (c == '\r') d->state = C_SIZE_LF;
            else if (c == ';') d->state = C_EXT;
            else if (c != ' ' && c != '\t') FAIL(400, "invalid chunk size");
            break;
        case C_EXT:
            if (c == '\r') d->state = C_SIZE_LF;
            else if (!is_vchar(c)) FAIL(400, c == '\n' ? "chunk size line not ended by CRLF"
                                                       : "invalid chunk extension");
            break;
        case C_SIZE_LF:
            if (c != '\n') FAIL(400, "chunk size line not ended by CRLF");
            d->line = 0;
            d->state = d->left ? C_DATA : C_TRAILER;
            break;
        case C_DATA_CR:
            if (c != '\r') FAIL(400, "chunk data not followed by CRLF");
            d->state = C_DATA_LF;
            break;
        case C_DATA_LF:
            if (c != '\n') FAIL(400, "chunk data not followed by CRLF");
            d->state = C_SIZE0;
            break;
        case C_TRAILER:
            if (c == '\r') d->state = C_END_LF;
            else if (is_tchar(c)) d->state = C_TRAILER_NAME;
            else if (c == ' ' || c == '\t') FAIL(400, "obsolete line folding in trailer");
            else FAIL(400, c == '\n' ? "trailer line not ended by CRLF" : "invalid trailer field");
            break;
        case C_TRAILER_NAME:
            if (c == ':') d->state = C_TRAILER_VALUE;
            else if (!is_tchar(c)) FAIL(400, "invalid trailer field");
            break;
        case C_TRAILER_VALUE:
            if (c == '\r') d->state = C_TRAILER_LF;
            else if (!is_vchar(c)) FAIL(400, c == '\n' ? "trailer line not ended by CRLF"
                                                       : "invalid trailer field");
            break;
        case C_TRAILER_LF:
            if (c != '\n') FAIL(400, "trailer line not ended by CRLF");
            d->state = C_TRAILER;
            break;
        case C_END_LF:
            if (c != '\n') FAIL(400, "chunked body not ended by CRLF");
            d->state = C_DONE;
            break;
        default:
            break;
        }
    }
#undef FAIL
    /* What was not consumed (only bytes after a finished body) moves down. */
    if (w != i && i < n) memmove(buf + w, buf + i, n - i);
    *len = w + (n - i);
    d->out = w;
    if (d->state == C_DONE) return JJ_HTTP_OK;
    if (d->state != C_FAILED) return JJ_HTTP_INCOMPLETE;
    if (status) *status = d->status;
    if (reason) *reason = d->reason;
    return JJ_HTTP_ERROR;

fail:
    d->state = C_FAILED;
    d->status = code;
    d->reason = why;
    d->out = w;
    *len = w;   /* the rest of the buffer is meaningless now */
    if (status) *status = code;
    if (reason) *reason = why;
    return JJ_HTTP_ERROR;
}
