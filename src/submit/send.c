/*
 * send.c - `tern send`: read a message on stdin and hand it to the running
 * server over SMTP, on the first smtp listener of the configuration.
 *
 * This is a command-line client, not part of the server: it blocks, with
 * a timeout on every read and write. The message is read whole (bounded
 * by session.data.limits.size), LF line ends become CRLF, and lines that
 * start with '.' are stuffed. The server decides everything else (relay
 * permission, limits), so its replies are printed as they are.
 */
#include "submit/send.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "config/settings.h"
#include "util/strbuf.h"

#define SEND_TIMEOUT_S 60
#define REPLY_MAX 8192

struct smtp_conn {
	int fd;
	char buf[REPLY_MAX];
	size_t len;
};

/* Read one whole reply (all its lines); returns its code, or -1. The
 * reply's text goes to text (size textlen). */
static int read_reply(struct smtp_conn *sc, char *text, size_t textlen)
{
	for (;;) {
		char *eol;

		while ((eol = memchr(sc->buf, '\n', sc->len)) != NULL) {
			size_t line_len = (size_t)(eol - sc->buf) + 1;
			size_t text_len = line_len - (line_len >= 2 && eol[-1] == '\r' ? 2 : 1);
			bool more = line_len > 4 && sc->buf[3] == '-';
			int code = line_len >= 4 ? atoi(sc->buf) : -1;

			snprintf(text, textlen, "%.*s", (int)text_len, sc->buf);
			memmove(sc->buf, sc->buf + line_len, sc->len - line_len);
			sc->len -= line_len;
			if (!more)
				return code;
		}
		if (sc->len == sizeof(sc->buf))
			return -1;
		ssize_t n = read(sc->fd, sc->buf + sc->len, sizeof(sc->buf) - sc->len);
		if (n <= 0)
			return -1;
		sc->len += (size_t)n;
	}
}

static bool write_all(int fd, const char *p, size_t len)
{
	while (len > 0) {
		ssize_t n = write(fd, p, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return false;
		p += n;
		len -= (size_t)n;
	}
	return true;
}

/* Send a command and read its reply; true when the code is expect. */
static bool command(struct smtp_conn *sc, const char *cmd, int expect, const char *what)
{
	char text[512];
	int code;

	if (cmd != NULL && !write_all(sc->fd, cmd, strlen(cmd))) {
		fprintf(stderr, "tern send: %s: connection lost: %s\n", what, strerror(errno));
		return false;
	}
	code = read_reply(sc, text, sizeof(text));
	if (code == expect)
		return true;
	if (code < 0)
		fprintf(stderr, "tern send: %s: no reply from the server\n", what);
	else
		fprintf(stderr, "tern send: %s: %s\n", what, text);
	return false;
}

/* The first smtp listener's first address, made connectable (0.0.0.0 ->
 * 127.0.0.1, :: -> ::1). */
static bool server_address(const struct config *cfg, struct sockaddr_storage *ss, socklen_t *len)
{
	for (size_t i = 0; i < config_section_count(cfg, CFG_GROUP_LISTENER); i++) {
		const struct cfg_section *l = config_section_at(cfg, CFG_GROUP_LISTENER, i);
		const struct cfg_value *bind = cfg_section_get(l, CFG_LISTENER_BIND);

		if (cfg_section_get(l, CFG_LISTENER_PROTOCOL)->num != CFG_PROTO_SMTP || bind->n_items == 0)
			continue;
		const struct cfg_value *b = &bind->items[0];
		memset(ss, 0, sizeof(*ss));
		if (b->addr.family == AF_INET) {
			struct sockaddr_in *sin = (struct sockaddr_in *)ss;
			sin->sin_family = AF_INET;
			sin->sin_port = htons((uint16_t)b->num);
			memcpy(&sin->sin_addr, b->addr.bytes, 4);
			if (sin->sin_addr.s_addr == htonl(INADDR_ANY))
				sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
			*len = sizeof(*sin);
		} else {
			struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
			sin6->sin6_family = AF_INET6;
			sin6->sin6_port = htons((uint16_t)b->num);
			memcpy(&sin6->sin6_addr, b->addr.bytes, 16);
			if (IN6_IS_ADDR_UNSPECIFIED(&sin6->sin6_addr))
				sin6->sin6_addr = in6addr_loopback;
			*len = sizeof(*sin6);
		}
		return true;
	}
	return false;
}

/* stdin as CRLF lines, dot-stuffed, ending in CRLF.CRLF. */
static bool read_message(struct strbuf *out, int64_t limit)
{
	char line[8192];
	bool at_line_start = true;
	size_t n;

	while ((n = fread(line, 1, sizeof(line), stdin)) > 0) {
		for (size_t i = 0; i < n; i++) {
			char c = line[i];

			if (at_line_start && c == '.')
				strbuf_putc(out, '.');
			if (c == '\n' && !(out->len > 0 && out->data[out->len - 1] == '\r'))
				strbuf_putc(out, '\r');
			strbuf_putc(out, c);
			at_line_start = c == '\n';
		}
		if ((int64_t)out->len > limit + limit / 8) {
			fprintf(stderr, "tern send: the message is larger than the server accepts "
				"(%lld bytes)\n", (long long)limit);
			return false;
		}
	}
	if (ferror(stdin)) {
		fprintf(stderr, "tern send: reading standard input: %s\n", strerror(errno));
		return false;
	}
	if (!at_line_start)
		strbuf_puts(out, "\r\n");
	strbuf_puts(out, ".\r\n");
	return !strbuf_failed(out);
}

static bool clean_address(const char *a)
{
	for (; *a != '\0'; a++)
		if ((unsigned char)*a < 0x21 || *a == '<' || *a == '>' || *a == 0x7f)
			return false;
	return true;
}

int send_main(const char *config_path, const char *sender, int n_rcpts, char **rcpts)
{
	struct diags diags;
	struct config *cfg;
	struct sockaddr_storage ss;
	socklen_t ss_len;
	struct smtp_conn sc = { .fd = -1 };
	struct strbuf msg, cmd;
	struct timeval tv = { SEND_TIMEOUT_S, 0 };
	char default_sender[512];
	int one = 1, rc = 1;

	diags_init(&diags, config_path);
	cfg = config_load_file(config_path, 0, &diags);
	diags_print(&diags, stderr);
	diags_free(&diags);
	if (cfg == NULL)
		return 1;
	if (!server_address(cfg, &ss, &ss_len)) {
		fprintf(stderr, "tern send: %s has no smtp listener to send through\n", config_path);
		config_free(cfg);
		return 1;
	}
	if (sender == NULL) {
		struct passwd *pw = getpwuid(getuid());
		snprintf(default_sender, sizeof(default_sender), "%s@%s",
			 pw != NULL ? pw->pw_name : "root", config_get(cfg, CFG_SERVER_HOSTNAME)->str);
		sender = default_sender;
	}
	for (int i = -1; i < n_rcpts; i++) {
		const char *a = i < 0 ? sender : rcpts[i];
		if (!clean_address(a) || strlen(a) > 320) {
			fprintf(stderr, "tern send: not a usable address: %s\n", a);
			config_free(cfg);
			return 2;
		}
	}
	strbuf_init(&msg);
	strbuf_init(&cmd);
	if (!read_message(&msg, config_get(cfg, CFG_SESSION_DATA_LIMITS_SIZE)->num))
		goto out;

	sc.fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (sc.fd < 0 || connect(sc.fd, (struct sockaddr *)&ss, ss_len) != 0) {
		fprintf(stderr, "tern send: cannot connect to the server (is `tern serve` running?): %s\n",
			strerror(errno));
		goto out;
	}
	setsockopt(sc.fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(sc.fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	setsockopt(sc.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (!command(&sc, NULL, 220, "greeting") || !command(&sc, "EHLO localhost\r\n", 250, "EHLO"))
		goto out;
	strbuf_printf(&cmd, "MAIL FROM:<%s>\r\n", sender);
	if (!command(&sc, strbuf_str(&cmd), 250, "MAIL FROM"))
		goto out;
	int accepted = 0;
	for (int i = 0; i < n_rcpts; i++) {
		strbuf_reset(&cmd);
		strbuf_printf(&cmd, "RCPT TO:<%s>\r\n", rcpts[i]);
		accepted += command(&sc, strbuf_str(&cmd), 250, rcpts[i]);
	}
	if (accepted < n_rcpts)
		goto out; /* all or nothing: a script must not half-send */
	if (!command(&sc, "DATA\r\n", 354, "DATA"))
		goto out;
	if (!write_all(sc.fd, msg.data, msg.len)) {
		fprintf(stderr, "tern send: connection lost sending the message\n");
		goto out;
	}
	char text[512];
	int code = read_reply(&sc, text, sizeof(text));
	if (code != 250) {
		fprintf(stderr, "tern send: message not queued: %s\n", code < 0 ? "no reply" : text);
		goto out;
	}
	/* "250 2.0.0 Ok: queued as ID": print the id for the script. */
	const char *id = strstr(text, "queued as ");
	printf("%s\n", id != NULL ? id + 10 : text);
	write_all(sc.fd, "QUIT\r\n", 6);
	rc = 0;
out:
	if (sc.fd >= 0)
		close(sc.fd);
	strbuf_free(&msg);
	strbuf_free(&cmd);
	config_free(cfg);
	return rc;
}
