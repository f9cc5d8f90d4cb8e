/*
 * keys.h - the one table of every configuration key (SPEC §2).
 *
 * Each row: enum name, dotted key ('*' stands for an id segment such as a
 * remote's name), value type, flags, rule variables allowed, default (as
 * TOML text, or a $-word computed at load: see settings.c), allowed words,
 * minimum and maximum for integers, and one line of help. The loader, the
 * defaults, validation, `tern config dump` and `tern config keys` all read
 * this table; nothing else lists keys.
 *
 * Flags: LIST = a list of the type (a scalar is a one-item list);
 * OPT = accepts "no value" (false, "", 0, never, disable, disabled);
 * RULE = accepts a rule array; REQ = required in its section.
 */
#ifndef TERN_CONFIG_KEYS_H
#define TERN_CONFIG_KEYS_H

#define K_LIST 0x1u
#define K_OPT  0x2u
#define K_RULE 0x4u
#define K_REQ  0x8u

#define K_MAXINT 2147483647

/* X(id, name, type, flags, vars, default, words, min, max, help) */
#define CFG_KEYS(X) \
X(SERVER_HOSTNAME, "server.hostname", CFG_STRING, 0, 0, "$hostname", NULL, 0, 0, \
  "host name for the banner, Received headers, the fallback EHLO name and DSNs") \
X(SERVER_GREETING, "server.greeting", CFG_STRING, 0, 0, "\"tern ESMTP\"", NULL, 0, 0, \
  "text of the SMTP banner after the host name") \
X(SERVER_MAX_CONNECTIONS, "server.max-connections", CFG_INT, 0, 0, "8192", NULL, 1, K_MAXINT, \
  "most inbound sessions at once") \
X(SERVER_TLS_CERTIFICATE, "server.tls.certificate", CFG_CERTREF, K_OPT, 0, NULL, NULL, 0, 0, \
  "certificate id for STARTTLS on every listener; STARTTLS is offered only when set") \
X(LISTENER_BIND, "server.listener.*.bind", CFG_BIND, K_LIST | K_REQ, 0, NULL, NULL, 0, 0, \
  "addresses to listen on: \"ip:port\" or \"[v6]:port\"") \
X(LISTENER_PROTOCOL, "server.listener.*.protocol", CFG_WORD, 0, 0, "\"smtp\"", cfg_words_listener_protocol, 0, 0, \
  "smtp, lmtp, or http (the management API)") \
X(LISTENER_GREETING, "server.listener.*.greeting", CFG_STRING, K_OPT, 0, NULL, NULL, 0, 0, \
  "banner text for this listener instead of server.greeting") \
X(LISTENER_TLS_IMPLICIT, "server.listener.*.tls.implicit", CFG_BOOL, 0, 0, "false", NULL, 0, 0, \
  "TLS from the first byte (port 465 style)") \
X(LISTENER_TLS_CERTIFICATE, "server.listener.*.tls.certificate", CFG_CERTREF, K_OPT, 0, NULL, NULL, 0, 0, \
  "certificate id for this listener instead of server.tls.certificate") \
X(CERT_CERT, "certificate.*.cert", CFG_SECRET, K_REQ, 0, NULL, NULL, 0, 0, \
  "PEM certificate chain, inline or file:///path") \
X(CERT_PRIVATE_KEY, "certificate.*.private-key", CFG_SECRET, K_REQ, 0, NULL, NULL, 0, 0, \
  "PEM private key, inline or file:///path") \
X(SESSION_TIMEOUT, "session.timeout", CFG_DURATION, K_RULE, RULE_VARS_C, "\"5m\"", NULL, 0, 0, \
  "idle limit for each inbound command") \
X(SESSION_RCPT_RELAY, "session.rcpt.relay", CFG_BOOL, K_RULE, RULE_VARS_A, "false", NULL, 0, 0, \
  "may this client relay mail to any domain") \
X(SESSION_RCPT_MAX_RECIPIENTS, "session.rcpt.max-recipients", CFG_INT, K_RULE, RULE_VARS_A, "100", NULL, 1, K_MAXINT, \
  "most recipients in one message") \
X(SESSION_AUTH_MECHANISMS, "session.auth.mechanisms", CFG_WORD, K_LIST | K_RULE | K_OPT, RULE_VARS_C, "[]", cfg_words_auth_mechanism, 0, 0, \
  "AUTH mechanisms offered: plain, login") \
X(SESSION_AUTH_LOOKUP, "session.auth.lookup", CFG_LISTREF, K_OPT, 0, NULL, NULL, 0, 0, \
  "list/<id> of user:secret entries for AUTH") \
X(SESSION_AUTH_REQUIRE, "session.auth.require", CFG_BOOL, K_RULE, RULE_VARS_C, "false", NULL, 0, 0, \
  "refuse MAIL before AUTH") \
X(SESSION_AUTH_ALLOW_PLAIN_TEXT, "session.auth.allow-plain-text", CFG_BOOL, 0, 0, "false", NULL, 0, 0, \
  "offer PLAIN and LOGIN without TLS") \
X(SESSION_DATA_LIMITS_SIZE, "session.data.limits.size", CFG_SIZE, K_RULE, RULE_VARS_A, "26214400", NULL, 1, 0, \
  "largest message accepted, in bytes (advertised as SIZE)") \
X(SESSION_DATA_LIMITS_MESSAGES, "session.data.limits.messages", CFG_INT, K_RULE, RULE_VARS_A, "10", NULL, 1, K_MAXINT, \
  "most messages in one session") \
X(SESSION_DATA_LIMITS_RECEIVED_HEADERS, "session.data.limits.received-headers", CFG_INT, 0, 0, "50", NULL, 1, K_MAXINT, \
  "more Received headers than this is a mail loop (554 5.4.6)") \
X(SESSION_EXT_PIPELINING, "session.extensions.pipelining", CFG_BOOL, K_RULE, RULE_VARS_A, "true", NULL, 0, 0, \
  "offer PIPELINING") \
X(SESSION_EXT_CHUNKING, "session.extensions.chunking", CFG_BOOL, K_RULE, RULE_VARS_A, "true", NULL, 0, 0, \
  "offer CHUNKING (BDAT)") \
X(SESSION_EXT_DSN, "session.extensions.dsn", CFG_BOOL, K_RULE, RULE_VARS_A, "true", NULL, 0, 0, \
  "offer DSN") \
X(SESSION_EXT_REQUIRETLS, "session.extensions.requiretls", CFG_BOOL, K_RULE, RULE_VARS_A, "false", NULL, 0, 0, \
  "offer REQUIRETLS") \
X(QUEUE_PATH, "queue.path", CFG_PATH, 0, 0, "$spool", NULL, 0, 0, \
  "spool directory, created if missing; relative to the config file's folder") \
X(QUEUE_SCHEDULE_RETRY, "queue.schedule.retry", CFG_DURATION, K_LIST | K_RULE, RULE_VARS_H, \
  "[\"1m\", \"2m\", \"5m\", \"10m\", \"15m\", \"30m\", \"1h\", \"2h\"]", NULL, 0, 0, \
  "waits between delivery attempts; the last one repeats") \
X(QUEUE_SCHEDULE_NOTIFY, "queue.schedule.notify", CFG_DURATION, K_LIST | K_RULE, RULE_VARS_R, "[\"1d\", \"3d\"]", NULL, 0, 0, \
  "times after arrival to send delay notices") \
X(QUEUE_SCHEDULE_EXPIRE, "queue.schedule.expire", CFG_DURATION, K_RULE, RULE_VARS_R, "\"5d\"", NULL, 0, 0, \
  "time after arrival when undelivered recipients fail") \
X(QUEUE_OUTBOUND_NEXT_HOP, "queue.outbound.next-hop", CFG_REMOTE, K_OPT | K_RULE, RULE_VARS_R, "false", NULL, 0, 0, \
  "remote id to relay to; no value delivers to the domain's MX hosts") \
X(QUEUE_OUTBOUND_HOSTNAME, "queue.outbound.hostname", CFG_STRING, K_OPT | K_RULE, RULE_VARS_S, "$hostname", NULL, 0, 0, \
  "EHLO/LHLO name; server.hostname when not set") \
X(QUEUE_OUTBOUND_IP_STRATEGY, "queue.outbound.ip-strategy", CFG_WORD, K_RULE, RULE_VARS_S, "\"ipv4-then-ipv6\"", cfg_words_ip_strategy, 0, 0, \
  "address families to connect to and their order") \
X(QUEUE_OUTBOUND_SOURCE_IP_V4, "queue.outbound.source-ip.v4", CFG_IPADDR, K_LIST | K_RULE | K_OPT, RULE_VARS_M, "[]", NULL, 4, 0, \
  "IPv4 source addresses, one picked at random per connection; empty = the system's choice") \
X(QUEUE_OUTBOUND_SOURCE_IP_V6, "queue.outbound.source-ip.v6", CFG_IPADDR, K_LIST | K_RULE | K_OPT, RULE_VARS_M, "[]", NULL, 6, 0, \
  "IPv6 source addresses, one picked at random per connection; empty = the system's choice") \
X(QUEUE_OUTBOUND_LIMITS_MX, "queue.outbound.limits.mx", CFG_INT, K_RULE, RULE_VARS_R, "5", NULL, 1, 1000, \
  "most MX hosts tried per delivery attempt") \
X(QUEUE_OUTBOUND_LIMITS_MULTIHOMED, "queue.outbound.limits.multihomed", CFG_INT, K_RULE, RULE_VARS_R, "2", NULL, 1, 1000, \
  "most addresses tried per MX host per attempt") \
X(QUEUE_OUTBOUND_TIMEOUT_CONNECT, "queue.outbound.timeouts.connect", CFG_DURATION, K_RULE, RULE_VARS_H, "\"5m\"", NULL, 0, 0, \
  "TCP connect") \
X(QUEUE_OUTBOUND_TIMEOUT_GREETING, "queue.outbound.timeouts.greeting", CFG_DURATION, K_RULE, RULE_VARS_H, "\"5m\"", NULL, 0, 0, \
  "wait for the server's banner") \
X(QUEUE_OUTBOUND_TIMEOUT_TLS, "queue.outbound.timeouts.tls", CFG_DURATION, K_RULE, RULE_VARS_H, "\"3m\"", NULL, 0, 0, \
  "STARTTLS command and TLS handshake") \
X(QUEUE_OUTBOUND_TIMEOUT_EHLO, "queue.outbound.timeouts.ehlo", CFG_DURATION, K_RULE, RULE_VARS_H, "\"5m\"", NULL, 0, 0, \
  "EHLO/LHLO reply") \
X(QUEUE_OUTBOUND_TIMEOUT_MAIL_FROM, "queue.outbound.timeouts.mail-from", CFG_DURATION, K_RULE, RULE_VARS_H, "\"5m\"", NULL, 0, 0, \
  "MAIL FROM reply") \
X(QUEUE_OUTBOUND_TIMEOUT_RCPT_TO, "queue.outbound.timeouts.rcpt-to", CFG_DURATION, K_RULE, RULE_VARS_H, "\"5m\"", NULL, 0, 0, \
  "each RCPT TO reply") \
X(QUEUE_OUTBOUND_TIMEOUT_DATA, "queue.outbound.timeouts.data", CFG_DURATION, K_RULE, RULE_VARS_H, "\"10m\"", NULL, 0, 0, \
  "354 wait, body transfer and final reply") \
X(QUEUE_OUTBOUND_TIMEOUT_MTA_STS, "queue.outbound.timeouts.mta-sts", CFG_DURATION, K_RULE, RULE_VARS_R, "\"10m\"", NULL, 0, 0, \
  "MTA-STS policy fetch") \
X(QUEUE_OUTBOUND_TLS_STARTTLS, "queue.outbound.tls.starttls", CFG_POLICY, K_RULE, RULE_VARS_M, "\"optional\"", NULL, 0, 0, \
  "STARTTLS to MX hosts: optional, require or disable") \
X(QUEUE_OUTBOUND_TLS_MTA_STS, "queue.outbound.tls.mta-sts", CFG_POLICY, K_RULE, RULE_VARS_R, "\"optional\"", NULL, 0, 0, \
  "MTA-STS (RFC 8461): optional, require or disable") \
X(QUEUE_OUTBOUND_TLS_DANE, "queue.outbound.tls.dane", CFG_POLICY, K_RULE, RULE_VARS_M, "\"optional\"", NULL, 0, 0, \
  "DANE (RFC 7672): optional, require or disable") \
X(REMOTE_ADDRESS, "remote.*.address", CFG_STRING, K_REQ, 0, NULL, NULL, 0, 0, \
  "host name or IP address of the relay") \
X(REMOTE_PORT, "remote.*.port", CFG_INT, K_REQ, 0, NULL, NULL, 1, 65535, \
  "TCP port of the relay") \
X(REMOTE_PROTOCOL, "remote.*.protocol", CFG_WORD, K_REQ, 0, NULL, cfg_words_remote_protocol, 0, 0, \
  "smtp or lmtp") \
X(REMOTE_CONCURRENCY, "remote.*.concurrency", CFG_INT, 0, 0, "10", NULL, 1, 100000, \
  "most connections open to this host at once") \
X(REMOTE_TIMEOUT, "remote.*.timeout", CFG_DURATION, K_OPT, 0, "false", NULL, 0, 0, \
  "upper bound on every stage timeout with this host") \
X(REMOTE_TLS_IMPLICIT, "remote.*.tls.implicit", CFG_BOOL, 0, 0, "$implicit", NULL, 0, 0, \
  "TLS from the first byte; default true for port 465") \
X(REMOTE_TLS_ALLOW_INVALID_CERTS, "remote.*.tls.allow-invalid-certs", CFG_BOOL, 0, 0, "false", NULL, 0, 0, \
  "accept any certificate from this host") \
X(REMOTE_AUTH_USERNAME, "remote.*.auth.username", CFG_STRING, K_OPT, 0, NULL, NULL, 0, 0, \
  "AUTH user name (with auth.secret)") \
X(REMOTE_AUTH_SECRET, "remote.*.auth.secret", CFG_SECRET, K_OPT, 0, NULL, NULL, 0, 0, \
  "AUTH password, inline or file:///path (with auth.username)") \
X(RESOLVER_TYPE, "resolver.type", CFG_WORD, 0, 0, "\"system\"", cfg_words_resolver_type, 0, 0, \
  "system (/etc/resolv.conf) or custom (resolver.custom)") \
X(RESOLVER_CUSTOM, "resolver.custom", CFG_NSADDR, K_LIST, 0, "[]", NULL, 0, 0, \
  "name servers for resolver.type = custom: udp://ip:port or tcp://ip:port") \
X(RESOLVER_TIMEOUT, "resolver.timeout", CFG_DURATION, 0, 0, "\"5s\"", NULL, 0, 0, \
  "wait for one DNS answer") \
X(RESOLVER_ATTEMPTS, "resolver.attempts", CFG_INT, 0, 0, "2", NULL, 1, 100, \
  "tries per DNS query") \
X(RESOLVER_DNSSEC_TRUST_ANCHOR, "resolver.dnssec.trust-anchor", CFG_PATH, 0, 0, "\"file:///usr/share/dns/root.key\"", NULL, 0, 0, \
  "DNSSEC trust anchor (DS or DNSKEY records) for DANE") \
X(REPORT_DSN_FROM_NAME, "report.dsn.from-name", CFG_STRING, 0, 0, "\"Mail Delivery Subsystem\"", NULL, 0, 0, \
  "display name of delivery status notices") \
X(REPORT_DSN_FROM_ADDRESS, "report.dsn.from-address", CFG_STRING, 0, 0, "$mailer-daemon", NULL, 0, 0, \
  "From address of delivery status notices") \
X(MANAGEMENT_AUTH_LOOKUP, "management.auth.lookup", CFG_LISTREF, K_OPT, 0, NULL, NULL, 0, 0, \
  "list/<id> of user:secret entries for the HTTP API; none refuses every request")

#endif
