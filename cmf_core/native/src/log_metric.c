/*
 * cmf's C API (see log_metric.h): steps are buffered here, in the frame that carries them, and handed to the
 * Python helper (python -m cmf_core.native, cmf_core/native/serve.py) once per commit_metrics.
 *
 * The helper is a child process on a socket pair rather than an interpreter embedded in this one: the host
 * links no libpython (any Python with cmf installed serves, its venv included), a failure in Python cannot take
 * the host down, and nothing is left to Py_Finalize, which cannot be undone and run again with numpy or pyarrow
 * loaded.  Frames are a 4-byte little-endian length and fields separated by NUL (C strings hold none):
 *
 *   init NUL mlmd NUL pipeline NUL stage NUL execution NUL (argument NUL)*    (this program's command line)
 *   commit NUL name NUL (n NUL key1 NUL ... keyn NUL value1 NUL ... valuen NUL)*
 *   finalize NUL
 *
 * answered "ok" or "error" NUL reason.  One lock serialises every call of every thread.
 */
#define _GNU_SOURCE
#include "log_metric.h"

#include <errno.h>
#include <pthread.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef CMF_PYTHON
#define CMF_PYTHON "python3"
#endif
#define MAX_FRAME (1u << 30) /* the most one commit sends: 1 GiB of steps */
#define MAX_ANSWER 65536

extern char **environ;

typedef struct {
    char *data;
    size_t len, cap;
} Buffer;

typedef struct {
    char *name;
    Buffer steps; /* the commit frame's fields after the name, ready to send */
} Metric;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static int sock = -1;           /* our end of the socket pair, -1 with no helper */
static pid_t helper = 0;
static int initialized = 0;     /* cmf_init succeeded and cmf_finalize has not run */
static Metric *metrics = NULL;  /* the names logged since the last commit of each */
static size_t n_metrics = 0, cap_metrics = 0;
static _Thread_local char last_error[1024]; /* each thread reads why its own call failed */

static int fail(int status, const char *format, ...) {
    va_list args;
    va_start(args, format);
    vsnprintf(last_error, sizeof last_error, format, args);
    va_end(args);
    return status;
}

static int ok(void) {
    last_error[0] = '\0';
    return CMF_OK;
}

const char *cmf_last_error(void) { return last_error; }

/* -- buffers ---------------------------------------------------------------------------------------------- */

static int reserve(Buffer *b, size_t more) {
    if (b->len + more <= b->cap) return 0;
    if (b->len + more > MAX_FRAME) return -1;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + more) cap *= 2;
    char *data = realloc(b->data, cap);
    if (!data) return -1;
    b->data = data;
    b->cap = cap;
    return 0;
}

/* Append `text` and its NUL. */
static int put(Buffer *b, const char *text) {
    size_t n = strlen(text) + 1;
    if (reserve(b, n)) return -1;
    memcpy(b->data + b->len, text, n);
    b->len += n;
    return 0;
}

static void release(Buffer *b) {
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

/* -- the helper process ----------------------------------------------------------------------------------- */

static int send_all(const void *data, size_t len) {
    const char *p = data;
    while (len) {
        ssize_t n = send(sock, p, len, MSG_NOSIGNAL); /* a helper gone is an error, not a SIGPIPE */
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

static int recv_all(void *data, size_t len) {
    char *p = data;
    while (len) {
        ssize_t n = recv(sock, p, len, 0);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

static void stop_helper(void) {
    if (sock >= 0) close(sock); /* the helper reads the end of its input and exits */
    sock = -1;
    if (helper > 0) {
        int status;
        while (waitpid(helper, &status, 0) < 0 && errno == EINTR) {
        }
    }
    helper = 0;
    initialized = 0;
}

static int helper_gone(const char *what) {
    stop_helper();
    return fail(CMF_ERR_HELPER, "%s: the cmf helper process (python -m cmf_core.native) stopped; its error is on "
                "stderr", what);
}

/* Send one frame (`head` fields, then `body` as it is) and read the answer: CMF_OK, or the helper's reason. */
static int request(const char *what, const Buffer *head, const Buffer *body) {
    size_t len = head->len + (body ? body->len : 0);
    if (len > MAX_FRAME) return fail(CMF_ERR_ARGUMENT, "%s: more than 1 GiB of steps in one commit", what);
    unsigned char size[4] = {len & 0xff, (len >> 8) & 0xff, (len >> 16) & 0xff, (len >> 24) & 0xff};
    if (send_all(size, 4) || send_all(head->data, head->len) || (body && send_all(body->data, body->len)))
        return helper_gone(what);
    unsigned char answer_size[4];
    if (recv_all(answer_size, 4)) return helper_gone(what);
    uint32_t n = answer_size[0] | answer_size[1] << 8 | answer_size[2] << 16 | (uint32_t)answer_size[3] << 24;
    if (n == 0 || n > MAX_ANSWER) return helper_gone(what);
    char answer[MAX_ANSWER + 1];
    if (recv_all(answer, n)) return helper_gone(what);
    answer[n] = '\0';
    if (strcmp(answer, "ok") == 0) return ok();
    const char *reason = strncmp(answer, "error", 6) == 0 ? answer + 6 : answer;
    return fail(CMF_ERR_REFUSED, "%s: %s", what, reason);
}

static int start_helper(void) {
    int pair[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair))
        return fail(CMF_ERR_HELPER, "cmf_init: no socket for the cmf helper: %s", strerror(errno));
    const char *python = getenv("CMF_PYTHON");
    if (!python || !*python) python = CMF_PYTHON;
    char *argv[] = {(char *)python, "-m", "cmf_core.native", NULL};
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, pair[1], 0); /* dup2 drops close-on-exec from the copies */
    posix_spawn_file_actions_adddup2(&actions, pair[1], 1);
    int error = posix_spawnp(&helper, python, &actions, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&actions);
    close(pair[1]);
    if (error) {
        close(pair[0]);
        helper = 0;
        return fail(CMF_ERR_HELPER, "cmf_init: cannot start %s (set CMF_PYTHON to a Python with cmf installed): %s",
                    python, strerror(error));
    }
    sock = pair[0];
    return CMF_OK;
}

/* Append this program's command line (Linux: /proc/self/cmdline, arguments NUL-terminated already), which the
 * execution records as its command; nothing where it cannot be read. */
static int put_command_line(Buffer *b) {
    FILE *f = fopen("/proc/self/cmdline", "rb");
    if (!f) return 0;
    char chunk[4096];
    size_t n, total = 0;
    int failed = 0;
    while (!failed && (n = fread(chunk, 1, sizeof chunk, f)) > 0 && total < MAX_ANSWER) {
        failed = reserve(b, n);
        if (!failed) {
            memcpy(b->data + b->len, chunk, n);
            b->len += n;
            total += n;
        }
    }
    fclose(f);
    if (!failed && total && b->data[b->len - 1] != '\0') failed = put(b, ""); /* cut short: end the last one */
    return failed;
}

/* -- the API ---------------------------------------------------------------------------------------------- */

static int named(const char *what, const char *name, const char *role) {
    if (!name || !*name) return fail(CMF_ERR_ARGUMENT, "%s: the %s is %s", what, role, name ? "empty" : "NULL");
    return CMF_OK;
}

int cmf_try_init(const char *mlmd_path, const char *pipeline_name, const char *context_name,
                 const char *execution_name) {
    pthread_mutex_lock(&lock);
    int status = named("cmf_init", mlmd_path, "mlmd path");
    if (!status) status = named("cmf_init", pipeline_name, "pipeline name");
    if (!status) status = named("cmf_init", context_name, "context (stage) name");
    if (!status) status = named("cmf_init", execution_name, "execution name");
    if (!status && initialized)
        status = fail(CMF_ERR_ARGUMENT, "cmf_init: cmf is initialized already; call cmf_finalize first");
    if (!status && sock < 0) status = start_helper();
    if (!status) {
        Buffer head = {0};
        if (put(&head, "init") || put(&head, mlmd_path) || put(&head, pipeline_name) || put(&head, context_name) ||
            put(&head, execution_name) || put_command_line(&head))
            status = fail(CMF_ERR_MEMORY, "cmf_init: out of memory");
        else
            status = request("cmf_init", &head, NULL);
        release(&head);
        initialized = status == CMF_OK;
    }
    pthread_mutex_unlock(&lock);
    return status;
}

int is_cmf_initialized(void) {
    pthread_mutex_lock(&lock);
    int answer = initialized;
    pthread_mutex_unlock(&lock);
    return answer;
}

static Metric *metric(const char *name) {
    for (size_t i = 0; i < n_metrics; i++)
        if (strcmp(metrics[i].name, name) == 0) return &metrics[i];
    if (n_metrics == cap_metrics) {
        size_t cap = cap_metrics ? cap_metrics * 2 : 8;
        Metric *grown = realloc(metrics, cap * sizeof *grown);
        if (!grown) return NULL;
        metrics = grown;
        cap_metrics = cap;
    }
    Metric *m = &metrics[n_metrics];
    m->name = strdup(name);
    if (!m->name) return NULL;
    m->steps = (Buffer){0};
    n_metrics++;
    return m;
}

int cmf_try_log_metric(const char *key, const char **dict_keys, const char **dict_values, int dict_size) {
    pthread_mutex_lock(&lock);
    int status = named("log_metric", key, "metrics name");
    if (!status && !initialized)
        status = fail(CMF_ERR_NOT_INITIALIZED, "log_metric: cmf is not initialized; call cmf_init first");
    if (!status && (dict_size < 0 || (dict_size > 0 && (!dict_keys || !dict_values))))
        status = fail(CMF_ERR_ARGUMENT, "log_metric(%s): %d values, and keys or values NULL", key, dict_size);
    for (int i = 0; !status && i < dict_size; i++) {
        if (!dict_keys[i] || !*dict_keys[i] || !dict_values[i])
            status = fail(CMF_ERR_ARGUMENT, "log_metric(%s): key or value %d is NULL or the key is empty", key, i);
    }
    Metric *m = status ? NULL : metric(key);
    if (!status && !m) status = fail(CMF_ERR_MEMORY, "log_metric(%s): out of memory", key);
    if (!status) {
        size_t mark = m->steps.len; /* a step is added whole or not at all */
        char count[16];
        snprintf(count, sizeof count, "%d", dict_size);
        int failed = put(&m->steps, count);
        for (int i = 0; !failed && i < dict_size; i++) failed = put(&m->steps, dict_keys[i]);
        for (int i = 0; !failed && i < dict_size; i++) failed = put(&m->steps, dict_values[i]);
        if (failed) {
            m->steps.len = mark;
            status = fail(CMF_ERR_MEMORY, "log_metric(%s): out of memory (or over 1 GiB of steps uncommitted)", key);
        } else {
            status = ok();
        }
    }
    pthread_mutex_unlock(&lock);
    return status;
}

int cmf_try_commit_metrics(const char *metrics_name) {
    pthread_mutex_lock(&lock);
    int status = named("commit_metrics", metrics_name, "metrics name");
    if (!status && !initialized)
        status = fail(CMF_ERR_NOT_INITIALIZED, "commit_metrics: cmf is not initialized; call cmf_init first");
    if (!status) {
        Metric *m = metric(metrics_name);
        Buffer head = {0};
        if (!m || put(&head, "commit") || put(&head, metrics_name))
            status = fail(CMF_ERR_MEMORY, "commit_metrics(%s): out of memory", metrics_name);
        else
            status = request("commit_metrics", &head, &m->steps);
        if (!status) m->steps.len = 0; /* handed over: Python holds them (and writes them all at each commit) */
        release(&head);
    }
    pthread_mutex_unlock(&lock);
    return status;
}

static void forget_metrics(void) {
    for (size_t i = 0; i < n_metrics; i++) {
        free(metrics[i].name);
        release(&metrics[i].steps);
    }
    free(metrics);
    metrics = NULL;
    n_metrics = cap_metrics = 0;
}

int cmf_try_finalize(void) {
    pthread_mutex_lock(&lock);
    int status;
    if (!initialized) {
        status = fail(CMF_ERR_NOT_INITIALIZED, "cmf_finalize: cmf is not initialized; call cmf_init first");
    } else {
        Buffer head = {0};
        status = put(&head, "finalize") ? fail(CMF_ERR_MEMORY, "cmf_finalize: out of memory")
                                        : request("cmf_finalize", &head, NULL);
        release(&head);
        stop_helper(); /* uncommitted steps go with it, as in Python */
        if (!status) ok();
    }
    forget_metrics();
    pthread_mutex_unlock(&lock);
    return status;
}

/* -- the original's functions: the same calls, failures said on stderr ------------------------------------- */

static void said(int status) {
    if (status) fprintf(stderr, "cmf: error: %s\n", last_error);
}

void cmf_init(const char *mlmd_path, const char *pipeline_name, const char *context_name, const char *execution_name) {
    said(cmf_try_init(mlmd_path, pipeline_name, context_name, execution_name));
}

void log_metric(const char *key, const char **dict_keys, const char **dict_values, int dict_size) {
    said(cmf_try_log_metric(key, dict_keys, dict_values, dict_size));
}

void commit_metrics(const char *metrics_name) { said(cmf_try_commit_metrics(metrics_name)); }

void cmf_finalize(void) { said(cmf_try_finalize()); }
