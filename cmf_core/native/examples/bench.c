/* How much log_metric and commit_metrics cost: `cmf-c-bench MLMD STEPS` logs STEPS steps of three values in a
 * tight loop, then commits them and finalizes, and prints one JSON line with the seconds of each (bench/native.py
 * runs it beside the same calls from Python).  finalize includes the helper process's exit. */
#include "log_metric.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s MLMD STEPS\n", argv[0]);
        return 2;
    }
    long steps = atol(argv[2]);
    double started = now();
    if (cmf_try_init(argv[1], "bench", "native", "bench")) {
        fprintf(stderr, "cmf: error: %s\n", cmf_last_error());
        return 1;
    }
    double initialised = now();
    const char *keys[] = {"loss", "accuracy", "step"};
    char loss[32], accuracy[32], step[32];
    const char *values[] = {loss, accuracy, step};
    for (long i = 0; i < steps; i++) {
        snprintf(loss, sizeof loss, "%.6f", 1.0 / (i + 1));
        snprintf(accuracy, sizeof accuracy, "%.6f", 1.0 - 1.0 / (i + 2));
        snprintf(step, sizeof step, "%ld", i);
        if (cmf_try_log_metric("training", keys, values, 3)) {
            fprintf(stderr, "cmf: error: %s\n", cmf_last_error());
            return 1;
        }
    }
    double logged = now();
    if (cmf_try_commit_metrics("training")) {
        fprintf(stderr, "cmf: error: %s\n", cmf_last_error());
        return 1;
    }
    double committed = now();
    if (cmf_try_finalize()) {
        fprintf(stderr, "cmf: error: %s\n", cmf_last_error());
        return 1;
    }
    double finalized = now();
    printf("{\"steps\": %ld, \"init_s\": %.6f, \"log_metric_s\": %.6f, \"commit_s\": %.6f, \"finalize_s\": %.6f}\n",
           steps, initialised - started, logged - initialised, committed - logged, finalized - committed);
    return 0;
}
