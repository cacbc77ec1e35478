/* test_crashsafe.c — files are replaced atomically: tests/crashsafe.py kills
 * `rotkv calibrate -o`, a server slot save and `rotkv perplexity
 * --kl-divergence-base` with SIGKILL at random moments (20 times each here;
 * run the script by hand for the 100) and checks that the destination
 * always holds the old or the new file, byte for byte, and that no more than
 * one temporary is ever left beside it. Also the helper's temp-name check. */
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "atomic_file.h"

static void test_kill_during_save(void **state) {
    (void)state;
    char cmd[512];
    snprintf(cmd, sizeof cmd, "python3 tests/crashsafe.py --iterations %s",
             getenv("CRASHSAFE_ITERATIONS") ? getenv("CRASHSAFE_ITERATIONS") : "20");
    int st = system(cmd);
    int rc = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    if (rc == 77) {
        print_message("[ SKIP     ] crashsafe.py: no tiny model in ../shared\n");
        skip();
    }
    assert_int_equal(rc, 0);
}

/* Replacing a file: the old one stays until commit; a failed write or an
 * abort leaves it alone and removes the temporary. */
static void test_atomic_file(void **state) {
    (void)state;
    char dir[] = "/tmp/rotkv-atomic-XXXXXX", dest[64], tmp[96];
    assert_non_null(mkdtemp(dir));
    snprintf(dest, sizeof dest, "%s/f.bin", dir);
    FILE *fp = fopen(dest, "wb");
    assert_non_null(fp);
    fputs("old", fp);
    fclose(fp);
    /* a temporary of a process that is gone is removed by the next open */
    snprintf(tmp, sizeof tmp, "%s.tmp.%d", dest, 999999999);
    fp = fopen(tmp, "wb");
    assert_non_null(fp);
    fclose(fp);

    atomic_file a;
    assert_true(atomic_file_open(&a, dest));
    assert_null(fopen(tmp, "rb"));
    fputs("new", a.fp);
    size_t n;
    char *txt = test_read_file(dest, &n);
    assert_true(n == 3 && !memcmp(txt, "old", 3)); /* untouched until commit */
    free(txt);
    assert_false(atomic_file_commit(&a, false)); /* a failed write: old stays */
    txt = test_read_file(dest, &n);
    assert_true(n == 3 && !memcmp(txt, "old", 3));
    free(txt);

    assert_true(atomic_file_open(&a, dest));
    fputs("newer", a.fp);
    atomic_file_abort(&a);
    txt = test_read_file(dest, &n);
    assert_true(n == 3 && !memcmp(txt, "old", 3));
    free(txt);

    assert_true(atomic_file_open(&a, dest));
    fputs("new", a.fp);
    assert_true(atomic_file_commit(&a, true));
    txt = test_read_file(dest, &n);
    assert_true(n == 3 && !memcmp(txt, "new", 3));
    free(txt);
    assert_int_equal(remove(dest), 0);
    assert_int_equal(rmdir(dir), 0); /* nothing else left */

    snprintf(dest, sizeof dest, "%s/none/f.bin", dir);
    assert_false(atomic_file_open(&a, dest));

    assert_true(atomic_file_is_temp("x.slot.tmp.123"));
    assert_true(atomic_file_is_temp("a.tmp.b.tmp.7"));
    assert_false(atomic_file_is_temp("x.tmp."));
    assert_false(atomic_file_is_temp("x.tmp.12a"));
    assert_false(atomic_file_is_temp("x.slot"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_atomic_file),
        cmocka_unit_test(test_kill_during_save),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
