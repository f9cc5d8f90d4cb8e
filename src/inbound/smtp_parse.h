/*
 * smtp_parse.h - the inbound session's parser: one command line in, a
 * command and its checked arguments out (private to src/inbound).
 *
 * Every function takes a line without its CRLF, as bytes with a length,
 * and never reads past it. Results point into the line; nothing is
 * copied or allocated. A failed parse returns the complete reply to send
 * (code, enhanced status, text; no CRLF) so the session only has to
 * write it: errors are data, decided here once.
 */
#ifndef TERN_INBOUND_SMTP_PARSE_H
#define TERN_INBOUND_SMTP_PARSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Longest command line, CRLF included (RFC 5321 4.5.3.1.4 says 512;
 * extensions such as DSN parameters need more). */
#define SMTP_LINE_MAX 2048
/* Longest address (local part, '@', domain) accepted in MAIL and RCPT. */
#define SMTP_ADDR_MAX 256
/* Longest HELO/EHLO/LHLO name kept. */
#define SMTP_HELO_MAX 255

enum smtp_verb {
	SMTP_UNKNOWN,
	SMTP_HELO,
	SMTP_EHLO,
	SMTP_LHLO,
	SMTP_MAIL,
	SMTP_RCPT,
	SMTP_DATA,
	SMTP_BDAT,
	SMTP_RSET,
	SMTP_NOOP,
	SMTP_QUIT,
	SMTP_VRFY,
	SMTP_HELP,
	/* Known, deliberately not implemented (502). */
	SMTP_EXPN,
	SMTP_STARTTLS,
	SMTP_AUTH,
	SMTP_ETRN,
	SMTP_TURN,
	SMTP_VERB_COUNT
};

struct smtp_cmd {
	enum smtp_verb verb;
	const char *arg; /* after the verb and its spaces, trailing spaces cut */
	size_t arg_len;  /* 0: no argument */
};

/* Extensions offered in this session's EHLO/LHLO reply; a parameter of
 * an extension not offered is refused (555). */
#define SMTP_EXT_SIZE       0x01u
#define SMTP_EXT_8BITMIME   0x02u
#define SMTP_EXT_SMTPUTF8   0x04u
#define SMTP_EXT_DSN        0x08u
#define SMTP_EXT_CHUNKING   0x10u
#define SMTP_EXT_REQUIRETLS 0x20u
#define SMTP_EXT_PIPELINING 0x40u

struct smtp_mail {
	const char *addr; /* reverse-path without <> or source route; "" = null sender */
	size_t addr_len;
	bool has_size;
	uint64_t size;    /* SIZE= */
	uint8_t body;     /* enum msg_body_type; 7BIT when not given */
	uint8_t ret;      /* enum msg_ret */
	bool smtputf8;
	bool requiretls;
	const char *envid; /* ENVID= as written (xtext), NULL when not given */
	size_t envid_len;
};

struct smtp_rcpt {
	const char *addr; /* forward-path without <> or source route */
	size_t addr_len;
	uint8_t notify;   /* RCPT_NOTIFY_* bits; 0 when not given */
	const char *orcpt; /* ORCPT= as written (type;xtext), NULL when not given */
	size_t orcpt_len;
};

/* Always succeeds: an unrecognised verb is SMTP_UNKNOWN. */
void smtp_parse_command(const char *line, size_t len, struct smtp_cmd *cmd);

/* The argument of HELO/EHLO/LHLO: its first word, in *name, *name_len. */
const char *smtp_parse_helo(const char *arg, size_t len, const char **name, size_t *name_len);

/* "FROM:<path> [params]"; ext is the session's SMTP_EXT_* offer. */
const char *smtp_parse_mail(const char *arg, size_t len, unsigned ext, struct smtp_mail *out);

/* "TO:<path> [params]"; smtputf8: the transaction's MAIL had SMTPUTF8. */
const char *smtp_parse_rcpt(const char *arg, size_t len, unsigned ext, bool smtputf8,
			    struct smtp_rcpt *out);

/* "size [LAST]" */
const char *smtp_parse_bdat(const char *arg, size_t len, uint64_t *size, bool *last);

/* RFC 3461 xtext: "+HH" (upper-case hex) or a printable character other
 * than '+' and '='. */
bool smtp_xtext_valid(const char *s, size_t len);

/* Safe to copy into a header: at least one byte, printable ASCII, and
 * none of the characters that would end or restructure a Received field
 * (space, "()<>;,", quote, backslash). Anything else is never echoed raw. */
bool smtp_text_safe(const char *s, size_t len);

#endif
