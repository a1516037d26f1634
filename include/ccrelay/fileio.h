/* SPDX-License-Identifier: Apache-2.0 */
/* Reading the files users name (configs, secrets, certificates, keys, CA bundles, trust-store
 * files) so that a wrong path can never hang or flood the process: a FIFO, a device or a socket is
 * refused before anything is read, and every read is capped. */
#ifndef CCRELAY_FILEIO_H
#define CCRELAY_FILEIO_H

#include <stddef.h>

/* Opens path read-only with O_NONBLOCK | O_CLOEXEC | O_NOCTTY (so opening a FIFO without a writer
 * returns at once instead of waiting for one), then refuses anything fstat does not call a regular
 * file. 0 and *fd (blocking again; the caller closes it), UV_E* from open or fstat, or
 * CR_ENOT_REGULAR when it is not a regular file: *kind (may be NULL) then names what it is ("a FIFO", "a directory",
 * "a socket", "a character device", "a block device"). */
int cr_fileio_open(const char *path, int *fd, const char **kind);

/* What a stat mode is, for messages: "a regular file", "a FIFO", "a directory", "a socket", ... */
const char *cr_fileio_kind(unsigned mode);

/* Reads the whole regular file at path into *data (NUL-terminated, the caller frees it), at most max
 * bytes. The buffer is sized once for max below 64 KiB, so a secret is never left behind in memory a
 * realloc gave up; on error nothing is returned and whatever was read is wiped. Errors:
 * CR_ENOT_REGULAR, err a sentence naming the file ("PATH is a FIFO, not a regular file");
 * CR_ELIMIT and UV_E* from open/read, err the reason alone ("larger than MAX bytes", strerror
 * text), for the caller to say which file. */
int cr_fileio_read(const char *path, size_t max, char **data, size_t *len, char *err, size_t errlen);

#endif
