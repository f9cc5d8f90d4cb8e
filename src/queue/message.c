/*
 * message.c - envelope construction and release; see message.h.
 */
#include "queue/message.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

bool message_set_string(char **field, const char *s, size_t len)
{
	char *copy = malloc(len + 1);

	if (copy == NULL)
		return false;
	memcpy(copy, s, len);
	copy[len] = '\0';
	free(*field);
	*field = copy;
	return true;
}

struct message *message_new(const char *sender, size_t sender_len)
{
	struct message *m = calloc(1, sizeof(*m));

	if (m == NULL)
		return NULL;
	if (!message_set_string(&m->sender, sender, sender_len) ||
	    !message_set_string(&m->sender_lower, sender, sender_len)) {
		free(m->sender);
		free(m);
		return NULL;
	}
	for (char *p = m->sender_lower; *p != '\0'; p++)
		*p = (char)tolower((unsigned char)*p);
	return m;
}

struct rcpt *message_add_rcpt(struct message *m, const char *addr, size_t len)
{
	struct rcpt *r;
	const char *at;
	char *buf, *dom;

	if (m->n_rcpts == m->cap_rcpts) {
		size_t cap = m->cap_rcpts ? m->cap_rcpts * 2 : 4;
		struct rcpt *rcpts = realloc(m->rcpts, cap * sizeof(*rcpts));

		if (rcpts == NULL)
			return NULL;
		m->rcpts = rcpts;
		m->cap_rcpts = cap;
	}
	/* One allocation: the address, then its lower-cased domain. */
	buf = malloc(2 * len + 2);
	if (buf == NULL)
		return NULL;
	memcpy(buf, addr, len);
	buf[len] = '\0';
	at = memrchr(buf, '@', len);
	dom = buf + len + 1;
	size_t dlen = at != NULL ? len - (size_t)(at - buf) - 1 : 0;
	for (size_t i = 0; i < dlen; i++)
		dom[i] = (char)tolower((unsigned char)at[1 + i]);
	dom[dlen] = '\0';

	r = &m->rcpts[m->n_rcpts++];
	memset(r, 0, sizeof(*r));
	r->addr = buf;
	r->addr_len = len;
	r->domain = dom;
	r->domain_len = dlen;
	return r;
}

void message_free(struct message *m)
{
	if (m == NULL)
		return;
	for (size_t i = 0; i < m->n_rcpts; i++) {
		free(m->rcpts[i].addr);
		free(m->rcpts[i].orcpt);
	}
	free(m->rcpts);
	free(m->sender);
	free(m->sender_lower);
	free(m->envid);
	free(m);
}

size_t message_pending(const struct message *m)
{
	size_t n = 0;

	for (size_t i = 0; i < m->n_rcpts; i++)
		n += m->rcpts[i].state == RCPT_PENDING;
	return n;
}

struct message_body *message_body_new(size_t len)
{
	struct message_body *b = malloc(sizeof(*b) + len + 1);

	if (b == NULL)
		return NULL;
	b->refs = 1;
	b->len = len;
	b->data[len] = '\0';
	return b;
}

struct message_body *message_body_ref(struct message_body *b)
{
	b->refs++;
	return b;
}

void message_body_unref(struct message_body *b)
{
	if (b != NULL && --b->refs == 0)
		free(b);
}
