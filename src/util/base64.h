/*
 * base64.h - base64 (RFC 4648, the standard alphabet, with padding) both
 * ways, into buffers the caller sizes. Decoding is strict: no whitespace,
 * no missing or misplaced padding, no stray bits; anything else is
 * refused rather than guessed at, since the input comes from the network.
 */
#ifndef TERN_UTIL_BASE64_H
#define TERN_UTIL_BASE64_H

#include <stdbool.h>
#include <stddef.h>

/* Encoded length of n bytes, without the terminating NUL. */
#define BASE64_ENCODED_LEN(n) (4 * (((n) + 2) / 3))

/* Encode n bytes into out (BASE64_ENCODED_LEN(n) + 1 bytes), NUL-terminated;
 * returns the encoded length. */
size_t base64_encode(const void *in, size_t n, char *out);

/* Decode len characters into out (outcap bytes); *outlen gets the decoded
 * length. False when the text is not strict base64 or does not fit. */
bool base64_decode(const char *in, size_t len, void *out, size_t outcap, size_t *outlen);

#endif
