/*
 * sasl.h - the server side of SMTP AUTH's two mechanisms, PLAIN (RFC
 * 4616) and LOGIN, as pure functions over one client line at a time
 * (private to src/inbound).
 *
 * Decoding is strict (util/base64.h) and bounded: a response that decodes
 * to more than SASL_FIELD_MAX bytes per field, or holds a NUL where none
 * may be, is refused as malformed. Failures are the complete SMTP reply
 * to send, as for the command parser. The decoded secret lives only in
 * the caller's buffer, which the caller wipes.
 *
 * Not here: the AUTH command's state in the session, offering AUTH, and
 * logging (the session logs the user name, never the secret).
 */
#ifndef TERN_INBOUND_SASL_H
#define TERN_INBOUND_SASL_H

#include <stdbool.h>
#include <stddef.h>

struct cfg_list;

/* Longest user name or secret; longer ones are refused. */
#define SASL_FIELD_MAX 255

#define SASL_R_CANCELLED "501 5.0.0 Authentication cancelled"
#define SASL_R_BAD_BASE64 "501 5.5.2 Cannot decode response"

struct sasl_cred {
	char user[SASL_FIELD_MAX + 1];
	size_t user_len;
	char secret[SASL_FIELD_MAX + 1];
	size_t secret_len;
};

/* A client response line ("*" cancels); the decoded bytes into out
 * (SASL_FIELD_MAX * 2 + 2 bytes will do for PLAIN). NULL when fine,
 * else the reply. */
const char *sasl_decode_response(const char *line, size_t len, char *out, size_t outcap,
				 size_t *outlen);

/* PLAIN: "[authzid] NUL authcid NUL passwd", decoded. An authzid other
 * than the authcid is refused: nobody may act for another here. */
const char *sasl_plain_parse(const char *msg, size_t len, struct sasl_cred *out);

/* One LOGIN field (user name or password), decoded, into buf (one of
 * out's fields, cap SASL_FIELD_MAX + 1). */
const char *sasl_login_field(const char *msg, size_t len, char *buf, size_t *buflen);

/* Are user and secret an entry "user:secret" of list? Every entry is
 * compared in full, in a time that does not depend on where one differs. */
bool sasl_check(const struct cfg_list *list, const struct sasl_cred *cred);

/* Wipe cred (secrets do not linger on the heap). */
void sasl_cred_clear(struct sasl_cred *cred);

#endif
