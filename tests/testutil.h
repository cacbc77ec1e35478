/* testutil.h — helpers shared by the cmocka test programs. */
#ifndef ROTKV_TESTUTIL_H
#define ROTKV_TESTUTIL_H
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

/* Directory holding models/ and golden/ (env ROTKV_SHARED, default ../shared).
 * Returns NULL when it does not exist. */
const char *test_shared_dir(void);
/* Full path of a file under the shared directory, or NULL (and the calling test
 * is skipped with the reason printed) when the shared directory is absent. */
const char *test_shared_path(const char *rel, char *buf, size_t len);
/* Reads a whole file; NULL if unreadable. Caller frees. */
char *test_read_file(const char *path, size_t *len);
/* Runs a shell command (popen) and returns its exit status (128 + signal if
 * killed); its stdout into *out (malloc'd) unless out is NULL. */
int test_run_cmd(const char *cmd, char **out);
/* Deterministic pseudo-random numbers for tests. */
uint64_t test_rand_u64(uint64_t *state);
float test_rand_normal(uint64_t *state);
float test_rand_uniform(uint64_t *state); /* [0,1) */

#define SKIP_WITHOUT_SHARED(path, rel)                                          \
    do {                                                                        \
        if (!test_shared_path((rel), (path), sizeof(path))) {                   \
            print_message("[ SKIP     ] %s: ../shared not found (set ROTKV_SHARED)\n", rel); \
            skip();                                                             \
        }                                                                       \
    } while (0)
#endif
