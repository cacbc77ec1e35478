/* test_threadpool.c — the fork/join pool (src/threadpool.c): every run calls
 * fn exactly once on each of the nth threads with its own ith, the caller
 * returns only after all of them finished (their writes are visible), and this
 * holds on both wake-up paths: back-to-back runs (workers still spinning) and
 * runs after a pause longer than the spin (workers asleep on the condvar).
 * (A lost wake-up would show as this test hanging.) */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "testutil.h"
#include "threadpool.h"

typedef struct {
    int nth_seen[16];
    int calls[16];
    long round;
    long stamp[16]; /* each thread writes the round it ran in (plain stores) */
    atomic_int active;
} job;

static void work(void *arg, int ith, int nth) {
    job *j = arg;
    j->calls[ith]++;
    j->nth_seen[ith] = nth;
    j->stamp[ith] = j->round;
    atomic_fetch_add(&j->active, 1);
}

static void sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static void run_rounds(int nth, int rounds, int pause_every, int pause_ms) {
    threadpool *tp = threadpool_create(nth);
    assert_non_null(tp);
    assert_int_equal(threadpool_size(tp), nth);
    job j;
    memset(&j, 0, sizeof j);
    atomic_init(&j.active, 0);
    for (int r = 1; r <= rounds; r++) {
        j.round = r;
        atomic_store(&j.active, 0);
        threadpool_run(tp, work, &j);
        /* all threads done and their plain stores visible once run returns */
        assert_int_equal(atomic_load(&j.active), nth);
        for (int i = 0; i < nth; i++) {
            if (j.stamp[i] != r) fail_msg("thread %d of %d missed round %d", i, nth, r);
            assert_int_equal(j.calls[i], r);
            assert_int_equal(j.nth_seen[i], nth);
        }
        if (pause_every && r % pause_every == 0) sleep_ms(pause_ms);
    }
    threadpool_free(tp);
}

static void t_back_to_back(void **state) {
    (void)state;
    run_rounds(1, 1000, 0, 0);
    run_rounds(2, 20000, 0, 0);
    run_rounds(4, 2000, 0, 0); /* more threads than this VM's 2 CPUs: spinners get preempted */
}

static void t_after_sleep(void **state) {
    (void)state;
    /* 5 ms pauses: far past the spin, so workers go to sleep and must be woken */
    run_rounds(2, 60, 3, 5);
    run_rounds(4, 40, 2, 5);
}

static void t_create_free_idle(void **state) {
    (void)state;
    /* freeing a pool whose workers never ran, spinning or asleep */
    for (int i = 0; i < 50; i++) threadpool_free(threadpool_create(1 + i % 4));
    threadpool *tp = threadpool_create(3);
    sleep_ms(5);
    threadpool_free(tp);
    threadpool_free(NULL);
    assert_int_equal(threadpool_size(NULL), 1);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(t_back_to_back),
        cmocka_unit_test(t_after_sleep),
        cmocka_unit_test(t_create_free_idle),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
