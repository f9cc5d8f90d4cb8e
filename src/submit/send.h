/*
 * send.h - `tern send`: queue a message from standard input through the
 * running server, sendmail-style, for scripts and cron.
 */
#ifndef TERN_SUBMIT_SEND_H
#define TERN_SUBMIT_SEND_H

/* Exit code: 0 queued, 1 not queued (why is printed), 2 usage. */
int send_main(const char *config_path, const char *sender, int n_rcpts, char **rcpts);

#endif
