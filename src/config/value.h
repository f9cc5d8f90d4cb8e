/*
 * value.h - a typed setting value, as the settings table declares it.
 *
 * A value is what one key holds after validation, or what one branch of a
 * rule yields. Every value lives in the configuration's arena. List types
 * hold their elements in items[]; "no value" (false, "", 0, "never",
 * "disable", "disabled") is the flag none, valid only for optional keys.
 */
#ifndef TERN_CONFIG_VALUE_H
#define TERN_CONFIG_VALUE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config/toml.h"
#include "util/ipaddr.h"

enum cfg_type {
	CFG_STRING,    /* str */
	CFG_SECRET,    /* str; "file:///abs" is read at load, dumped as written */
	CFG_INT,       /* num */
	CFG_BOOL,      /* num: 0 or 1 */
	CFG_DURATION,  /* num: milliseconds, > 0 */
	CFG_SIZE,      /* num: bytes */
	CFG_WORD,      /* num: index into the key's word list; str: canonical word */
	CFG_POLICY,    /* num: enum cfg_policy */
	CFG_IPADDR,    /* addr */
	CFG_BIND,      /* addr + num (port) */
	CFG_REMOTE,    /* str: a remote id (must exist) */
	CFG_LISTREF,   /* str: "list/<id>"; list: resolved */
	CFG_CERTREF,   /* str: a certificate id (must exist) */
	CFG_NSADDR,    /* str: "udp://ip:port" or "tcp://ip:port"; addr + num (port) */
	CFG_PATH,      /* str: a file system path */
};

enum cfg_policy { CFG_POLICY_OPTIONAL, CFG_POLICY_REQUIRE, CFG_POLICY_DISABLE };

struct cfg_list;

struct cfg_value {
	bool none;          /* "no value" */
	enum cfg_type type; /* element type for lists */
	int64_t num;
	const char *str;
	size_t len;
	/* as written, where the effective value differs: a file:// secret
	 * (str holds the file's contents), a relative path (str is resolved) */
	const char *written;
	struct ipaddr addr;
	const struct cfg_list *list;
	/* list-typed settings: the elements (num/str/addr of each) */
	const struct cfg_value *items;
	size_t n_items;
	struct toml_pos pos; /* where it was written; {0,0} for defaults */
};

#endif
