/* atomic_file.h — replacing a file so that a crash never leaves a torn one.
 *
 * The new contents go to a temporary file beside the destination
 * (DEST.tmp.PID); atomic_file_commit flushes it to disk (fflush + fsync),
 * renames it over DEST and syncs the directory. A process killed at any moment
 * leaves DEST holding either the old file or the new one, plus at most its own
 * temporary, which no loader reads (they open DEST) and which the next
 * atomic_file_open for the same DEST removes once its process is gone. Used by
 * every rotkv writer: GGUF output, KV calibrations, slot saves, KLD base files. */
#ifndef ROTKV_ATOMIC_FILE_H
#define ROTKV_ATOMIC_FILE_H

#include <stdbool.h>
#include <stdio.h>

typedef struct {
    FILE *fp;   /* write the contents here */
    char *dest; /* the final path */
    char *tmp;  /* the temporary path */
} atomic_file;

/* Opens the temporary for DEST ("wb"), after removing temporaries of DEST left
 * by processes that no longer exist. false with errno set on failure (nothing
 * to free then). */
bool atomic_file_open(atomic_file *a, const char *dest);
/* If ok (every write succeeded): flush, fsync, close and rename into place.
 * Otherwise, or if any of that fails, removes the temporary and leaves DEST
 * alone. Returns whether DEST now holds the new contents; on false errno says
 * why (EIO when the caller's writes failed without setting it). Frees a. */
bool atomic_file_commit(atomic_file *a, bool ok);
/* Closes and removes the temporary; DEST is untouched. Frees a. */
void atomic_file_abort(atomic_file *a);
/* Whether a file name (no directory) has the form of a temporary: "*.tmp.DIGITS". */
bool atomic_file_is_temp(const char *name);

#endif
