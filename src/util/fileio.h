/*
 * fileio.h - read a whole regular file into memory, bounded.
 */
#ifndef TERN_UTIL_FILEIO_H
#define TERN_UTIL_FILEIO_H

#include <stddef.h>

/*
 * Read path into a malloc'd, NUL-terminated buffer (*data, *len; the
 * contents may hold NULs). Refuses anything but a regular file of at most
 * max bytes. Returns 0, or an errno value (EFBIG for too large, EINVAL for
 * not a regular file) with *data NULL.
 */
int file_read_all(const char *path, size_t max, char **data, size_t *len);

#endif
