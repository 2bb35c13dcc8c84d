/*
 * cmf's C API: compiled programs (simulation codes, HPC jobs) log step metrics into a cmf workspace.
 *
 * The first five functions are the original cmflib's, with its signatures: a program written for it compiles
 * unchanged.  Each logs nothing it cannot: a failure is never an abort; the void functions print one line
 * ("cmf: error: ...") on stderr, and the cmf_try_* variants return a status (CMF_OK is 0) instead, with the
 * reason in cmf_last_error().  Every function may be called from several threads: calls are serialised.
 *
 *   cmf_init(mlmd, pipeline, stage, execution)   open (or create) the mlmd file, inside a cmf workspace, and
 *                                                start the execution of that stage of that pipeline
 *   log_metric(name, keys, values, n)            add one step of n values to the metrics `name`: kept in this
 *                                                process until commit_metrics, so a loop of calls is cheap
 *   commit_metrics(name)                         write the steps of `name` as the Step_Metrics artifact that
 *                                                Python's Cmf.log_metric and commit_metrics write
 *   cmf_finalize()                               end the execution
 *
 * Values are text and keep their type: "10" is an integer, "10.12" a float, "[10,10.00,12]" a list of numbers,
 * anything else text.  Python does the work, in a helper process (python -m cmf_core.native) that cmf_init
 * starts: the interpreter is $CMF_PYTHON, else the one the library was built against.
 */
#ifndef LOG_METRIC_LIB_H
#define LOG_METRIC_LIB_H

#ifdef __cplusplus
extern "C" {
#endif

void cmf_init(const char *mlmd_path, const char *pipeline_name, const char *context_name, const char *execution_name);
int is_cmf_initialized(void);
void log_metric(const char *key, const char **dict_keys, const char **dict_values, int dict_size);
void commit_metrics(const char *metrics_name);
void cmf_finalize(void);

/* Statuses of the cmf_try_* functions. */
#define CMF_OK 0
#define CMF_ERR_NOT_INITIALIZED 1 /* a call before cmf_init succeeded (or after cmf_finalize) */
#define CMF_ERR_ARGUMENT 2        /* a NULL or empty name, a negative count, cmf_init twice */
#define CMF_ERR_REFUSED 3         /* cmf refused the call: no workspace, a bad name, nothing to commit... */
#define CMF_ERR_HELPER 4          /* the Python helper could not start, or stopped */
#define CMF_ERR_MEMORY 5

int cmf_try_init(const char *mlmd_path, const char *pipeline_name, const char *context_name,
                 const char *execution_name);
int cmf_try_log_metric(const char *key, const char **dict_keys, const char **dict_values, int dict_size);
int cmf_try_commit_metrics(const char *metrics_name);
int cmf_try_finalize(void);

/* Why the last call of this thread failed ("" after a call that succeeded). */
const char *cmf_last_error(void);

#ifdef __cplusplus
}
#endif

#endif
