/* sha1.h: SHA-1 (FIPS 180-4) for computing Redis script SHAs locally, so
 * that EVALSHA can be sent without first asking Redis. Not for security. */
#ifndef JJ_SHA1_H
#define JJ_SHA1_H

#include <stddef.h>

/* The 20-byte digest of data[0..len). */
void jj_sha1(const void *data, size_t len, unsigned char out[20]);
/* The digest as 40 lowercase hex digits plus NUL (the form Redis uses). */
void jj_sha1_hex(const void *data, size_t len, char out[41]);

#endif
