/*
 * test_sasl.c - AUTH PLAIN/LOGIN decoding and the credential check
 * (src/inbound/sasl.c): the bytes a client controls, edge by edge.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "config/settings.h"
#include "inbound/sasl.h"

static void test_decode_response(void **state)
{
	char out[64];
	size_t n = 99;

	(void)state;
	assert_string_equal(sasl_decode_response("*", 1, out, sizeof(out), &n), SASL_R_CANCELLED);
	assert_null(sasl_decode_response("=", 1, out, sizeof(out), &n));
	assert_int_equal(n, 0);
	assert_null(sasl_decode_response("YWxpY2U=", 8, out, sizeof(out), &n));
	assert_int_equal(n, 5);
	assert_memory_equal(out, "alice", 5);
	/* not strict base64: bad characters, missing padding, empty, too long */
	assert_string_equal(sasl_decode_response("YWxp Y2U=", 9, out, sizeof(out), &n),
			    SASL_R_BAD_BASE64);
	assert_string_equal(sasl_decode_response("YWxpY2U", 7, out, sizeof(out), &n),
			    SASL_R_BAD_BASE64);
	assert_string_equal(sasl_decode_response("", 0, out, sizeof(out), &n), SASL_R_BAD_BASE64);
	assert_string_equal(sasl_decode_response("YWxpY2U=", 8, out, 4, &n), SASL_R_BAD_BASE64);
}

static void test_plain_parse(void **state)
{
	struct sasl_cred c;

	(void)state;
	assert_null(sasl_plain_parse("\0alice\0s3cret", 13, &c));
	assert_int_equal(c.user_len, 5);
	assert_string_equal(c.user, "alice");
	assert_string_equal(c.secret, "s3cret");
	/* authzid equal to the authcid is fine, another one is not */
	assert_null(sasl_plain_parse("alice\0alice\0s3cret", 18, &c));
	assert_non_null(strstr(sasl_plain_parse("bob\0alice\0s3cret", 16, &c), "535 5.7.8"));
	/* malformed: no NULs, one NUL, empty user, a third NUL, too long */
	assert_memory_equal(sasl_plain_parse("alice", 5, &c), "501 5.5.2", 9);
	assert_memory_equal(sasl_plain_parse("\0alice", 6, &c), "501 5.5.2", 9);
	assert_memory_equal(sasl_plain_parse("\0\0s3cret", 8, &c), "501 5.5.2", 9);
	assert_memory_equal(sasl_plain_parse("\0alice\0s3\0cret", 14, &c), "501 5.5.2", 9);
	{
		char big[SASL_FIELD_MAX + 10] = { 0 };

		memset(big + 1, 'a', SASL_FIELD_MAX + 1);
		big[SASL_FIELD_MAX + 2] = '\0';
		assert_memory_equal(sasl_plain_parse(big, SASL_FIELD_MAX + 4, &c), "501 5.5.2", 9);
	}
	/* an empty password is a (wrong) password, not a syntax error */
	assert_null(sasl_plain_parse("\0alice\0", 7, &c));
	assert_int_equal(c.secret_len, 0);
}

static void test_login_field(void **state)
{
	char buf[SASL_FIELD_MAX + 1];
	size_t n;

	(void)state;
	assert_null(sasl_login_field("alice", 5, buf, &n));
	assert_string_equal(buf, "alice");
	assert_memory_equal(sasl_login_field("al\0ce", 5, buf, &n), "501 5.5.2", 9);
}

static void test_check(void **state)
{
	static const char cfg_text[] = "[list]\nusers = [\"alice:s3cret\", \"bob:a:b\"]\n"
				       "[session.auth]\nlookup = \"list/users\"\n";
	struct diags diags;
	struct config *cfg;
	const struct cfg_list *list;
	struct sasl_cred c;

	(void)state;
	diags_init(&diags, "t.toml");
	cfg = config_load_buffer(cfg_text, strlen(cfg_text), "/tmp", 0, &diags);
	diags_free(&diags);
	assert_non_null(cfg);
	list = config_get(cfg, CFG_SESSION_AUTH_LOOKUP)->list;
	assert_null(sasl_plain_parse("\0alice\0s3cret", 13, &c));
	assert_true(sasl_check(list, &c));
	assert_null(sasl_plain_parse("\0alice\0s3cre", 12, &c));
	assert_false(sasl_check(list, &c));
	assert_null(sasl_plain_parse("\0Alice\0s3cret", 13, &c));
	assert_false(sasl_check(list, &c));
	/* the secret may hold ':'; the user name may not (ambiguous) */
	assert_null(sasl_plain_parse("\0bob\0a:b", 8, &c));
	assert_true(sasl_check(list, &c));
	assert_null(sasl_plain_parse("\0bob:a\0b", 8, &c));
	assert_false(sasl_check(list, &c));
	assert_false(sasl_check(NULL, &c));
	sasl_cred_clear(&c);
	assert_int_equal(c.user_len, 0);
	config_free(cfg);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_decode_response),
		cmocka_unit_test(test_plain_parse),
		cmocka_unit_test(test_login_field),
		cmocka_unit_test(test_check),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
