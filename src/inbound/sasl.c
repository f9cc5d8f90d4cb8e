/*
 * sasl.c - AUTH PLAIN and LOGIN decoding and the credential check; see
 * sasl.h.
 */
#include "inbound/sasl.h"

#include <string.h>

#include "config/lists.h"
#include "util/base64.h"
#include "util/text.h"

#define R_MALFORMED "501 5.5.2 Malformed authentication response"

const char *sasl_decode_response(const char *line, size_t len, char *out, size_t outcap,
				 size_t *outlen)
{
	if (len == 1 && line[0] == '*')
		return SASL_R_CANCELLED;
	/* RFC 4954 4: "=" is an empty initial response. */
	if (len == 1 && line[0] == '=') {
		*outlen = 0;
		return NULL;
	}
	if (len == 0 || !base64_decode(line, len, out, outcap, outlen))
		return SASL_R_BAD_BASE64;
	return NULL;
}

const char *sasl_plain_parse(const char *msg, size_t len, struct sasl_cred *out)
{
	const char *nul1 = memchr(msg, '\0', len), *nul2, *authcid, *pass;
	size_t authz_len, authcid_len, pass_len;

	memset(out, 0, sizeof(*out));
	if (nul1 == NULL)
		return R_MALFORMED;
	authz_len = (size_t)(nul1 - msg);
	authcid = nul1 + 1;
	nul2 = memchr(authcid, '\0', len - authz_len - 1);
	if (nul2 == NULL)
		return R_MALFORMED;
	authcid_len = (size_t)(nul2 - authcid);
	pass = nul2 + 1;
	pass_len = len - authz_len - authcid_len - 2;
	if (authcid_len == 0 || authcid_len > SASL_FIELD_MAX || pass_len > SASL_FIELD_MAX ||
	    memchr(pass, '\0', pass_len) != NULL)
		return R_MALFORMED;
	if (authz_len != 0 && (authz_len != authcid_len || memcmp(msg, authcid, authz_len) != 0))
		return "535 5.7.8 Authentication credentials invalid";
	memcpy(out->user, authcid, authcid_len);
	out->user_len = authcid_len;
	memcpy(out->secret, pass, pass_len);
	out->secret_len = pass_len;
	return NULL;
}

const char *sasl_login_field(const char *msg, size_t len, char *buf, size_t *buflen)
{
	if (len > SASL_FIELD_MAX || memchr(msg, '\0', len) != NULL)
		return R_MALFORMED;
	memcpy(buf, msg, len);
	buf[len] = '\0';
	*buflen = len;
	return NULL;
}

bool sasl_check(const struct cfg_list *list, const struct sasl_cred *cred)
{
	char want[2 * SASL_FIELD_MAX + 2];
	size_t len = cred->user_len + 1 + cred->secret_len;
	bool match = false;

	/* A user name with ':' could never be told from its secret. */
	if (list == NULL || memchr(cred->user, ':', cred->user_len) != NULL)
		return false;
	memcpy(want, cred->user, cred->user_len);
	want[cred->user_len] = ':';
	memcpy(want + cred->user_len + 1, cred->secret, cred->secret_len);
	for (size_t i = 0; i < cfg_list_count(list); i++) {
		const char *entry = cfg_list_entry(list, i);

		match |= text_equal_secret(want, len, entry, strlen(entry));
	}
	explicit_bzero(want, sizeof(want));
	return match;
}

void sasl_cred_clear(struct sasl_cred *cred)
{
	explicit_bzero(cred, sizeof(*cred));
}
