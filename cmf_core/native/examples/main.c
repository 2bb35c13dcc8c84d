/* The original cmflib's C example, with the mlmd file as the first argument (default: ./mlmd).  Run it inside a
 * cmf workspace (cmf init).  Exit status 1 when cmf did not initialise. */
#include "log_metric.h"

#include <stdio.h>

int main(int argc, char **argv) {
    const char *mlmd = argc > 1 ? argv[1] : "mlmd";
    cmf_init(mlmd, "testsk", "testsk", "testsk");
    if (!is_cmf_initialized()) {
        printf("CMF initialization failed.\n");
        return 1;
    }

    const char *keys[] = {"train_loss"};
    const char *values[] = {"10"};
    log_metric("test_metrics", keys, values, 1);
    commit_metrics("test_metrics");

    const char *keys1[] = {"train1_loss", "train2_loss", "train3_loss"};
    const char *values1[] = {"10", "10.12", "[10,10.00,12]"};
    log_metric("test1_metrics", keys1, values1, 3);
    commit_metrics("test1_metrics");

    cmf_finalize();
    return 0;
}
