"""cmf's C and Fortran API (``cmf_core/native``, issue 26), built once with CMake and run as real programs in a cmf
workspace: the original cmflib's programs compile unchanged and what they log reads back through ``CmfQuery``, the
UI's read API and the parquet files with its types; many steps, two commits, threads and processes (MPI ranks)
lose nothing; every failure is a status and a message, never a crash; valgrind finds no leak.  Then the helper's
value typing (:func:`cmf_core.native.serve.value`), unit by unit."""
from __future__ import annotations

import ast
import math
import os
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cmf_core.native import source_dir
from cmf_core.native.serve import steps, value
from cmf_core.testing.servers import Server, free_port
from cmflib.cmf import Cmf
from cmflib.cmfquery import CmfQuery
from tests.test_ui_api import Target, in_workspace, module_workspace

# The statuses of log_metric.h: part of the ABI (Fortran callers compare numbers).
OK, NOT_INITIALIZED, ARGUMENT, REFUSED, HELPER = 0, 1, 2, 3, 4

# The original HPE cmflib's C example, verbatim but for the mlmd path ("MLMD", replaced at build time).
ORIGINAL_C = r"""
#include "log_metric.h"
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
int main() {
    cmf_init("MLMD", "testsk", "testsk", "testsk");
    if (!is_cmf_initialized()) { printf("CMF initialization failed.\n"); return 1; }
    srand(time(NULL));
    const char *keys[] = {"train_loss"};
    const char *values[] = {"10"};
    log_metric("test_metrics", keys, values, 1);
    commit_metrics("test_metrics");
    const char *keys1[] = {"train1_loss","train2_loss","train3_loss"};
    const char *values1[] = {"10","10.12","[10,10.00,12]"};
    log_metric("test1_metrics", keys1, values1, 3);
    commit_metrics("test1_metrics");
    cmf_finalize();
    return 0;
}
"""

# The original's Fortran example, the same way.
ORIGINAL_F90 = """
program main
  use cmflib, only : cmf_type
  implicit none
  type(cmf_type) :: cmf
  call cmf%initialize(&
    "MLMD", &
    "pipeline_name", "context_name", "execution_name")
  if (.not. cmf%initialized()) then
    write(*,*) "CMF did not initialize successfully"
    stop 1
  endif
  call cmf%log_metric("test_metric", ["train_loss"], ["1"], 1)
  call cmf%commit_metrics("test_metric")
  call cmf%finalize()
end program main
"""

# steps MLMD PIPELINE EXECUTION N [AFTER...]: N steps of loss "<i>.5" and step "<i>" under "training", committed
# after each step AFTER and after the last.
STEPS_C = r"""
#include "log_metric.h"
#include <stdio.h>
#include <stdlib.h>

static int failed(void) {
    fprintf(stderr, "cmf: error: %s\n", cmf_last_error());
    return 1;
}

int main(int argc, char **argv) {
    if (cmf_try_init(argv[1], argv[2], "native", argv[3])) return failed();
    int n = atoi(argv[4]), after = 5;
    const char *keys[] = {"loss", "step"};
    char loss[32], step[32];
    const char *values[] = {loss, step};
    for (int i = 1; i <= n; i++) {
        snprintf(loss, sizeof loss, "%d.5", i);
        snprintf(step, sizeof step, "%d", i);
        if (cmf_try_log_metric("training", keys, values, 2)) return failed();
        int commit = i == n;
        if (after < argc && atoi(argv[after]) == i) commit = ++after;
        if (commit && cmf_try_commit_metrics("training")) return failed();
    }
    return cmf_try_finalize() ? failed() : 0;
}
"""

# threads MLMD: 4 threads log 250 steps each into "shared" at once (thread t, its step i, check t*1000+i), then
# one commit.
THREADS_C = r"""
#include "log_metric.h"
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>

#define THREADS 4
#define STEPS 250

static void *work(void *arg) {
    int thread = (int)(intptr_t)arg;
    const char *keys[] = {"thread", "i", "check"};
    char t[16], i_text[16], check[16];
    const char *values[] = {t, i_text, check};
    for (int i = 0; i < STEPS; i++) {
        snprintf(t, sizeof t, "%d", thread);
        snprintf(i_text, sizeof i_text, "%d", i);
        snprintf(check, sizeof check, "%d", thread * 1000 + i);
        if (cmf_try_log_metric("shared", keys, values, 3)) return (void *)1;
    }
    return NULL;
}

int main(int argc, char **argv) {
    (void)argc;
    if (cmf_try_init(argv[1], "threads", "native", "threads")) return 1;
    pthread_t threads[THREADS];
    for (int t = 0; t < THREADS; t++) pthread_create(&threads[t], NULL, work, (void *)(intptr_t)t);
    int failed = 0;
    for (int t = 0; t < THREADS; t++) {
        void *result;
        pthread_join(threads[t], &result);
        failed |= result != NULL;
    }
    if (failed || cmf_try_commit_metrics("shared") || cmf_try_finalize()) {
        fprintf(stderr, "cmf: error: %s\n", cmf_last_error());
        return 1;
    }
    return 0;
}
"""

# errors MODE [MLMD]: calls that must fail (and a few that must not after them), one stdout line each:
# "label status message".
ERRORS_C = r"""
#include "log_metric.h"
#include <stdio.h>
#include <string.h>

static void show(const char *label, int status) {
    printf("%s %d %s\n", label, status, cmf_last_error());
    fflush(stdout);
}

int main(int argc, char **argv) {
    const char *keys[] = {"k"}, *values[] = {"1"}, *empty_key[] = {""};
    const char *mode = argv[1], *mlmd = argc > 2 ? argv[2] : "mlmd";
    if (strcmp(mode, "uninitialized") == 0) {
        show("log", cmf_try_log_metric("m", keys, values, 1));
        show("commit", cmf_try_commit_metrics("m"));
        show("finalize", cmf_try_finalize());
        log_metric("m", keys, values, 1);
        commit_metrics("m");
        cmf_finalize();
    } else if (strcmp(mode, "init") == 0) {
        show("init", cmf_try_init(mlmd, "errors", "native", "init"));
    } else {
        show("init_null_mlmd", cmf_try_init(NULL, "errors", "native", "arguments"));
        show("init_empty_pipeline", cmf_try_init(mlmd, "", "native", "arguments"));
        show("init_null_stage", cmf_try_init(mlmd, "errors", NULL, "arguments"));
        show("init_empty_execution", cmf_try_init(mlmd, "errors", "native", ""));
        show("init", cmf_try_init(mlmd, "errors", "native", "arguments"));
        show("init_twice", cmf_try_init(mlmd, "errors", "native", "again"));
        show("log_null_name", cmf_try_log_metric(NULL, keys, values, 1));
        show("log_empty_name", cmf_try_log_metric("", keys, values, 1));
        show("log_negative_count", cmf_try_log_metric("m", keys, values, -1));
        show("log_null_keys", cmf_try_log_metric("m", NULL, values, 1));
        show("log_empty_key", cmf_try_log_metric("m", empty_key, values, 1));
        show("commit_null_name", cmf_try_commit_metrics(NULL));
        show("commit_never_logged", cmf_try_commit_metrics("never_logged"));
        commit_metrics("never_logged");
        show("log", cmf_try_log_metric("m", keys, values, 1));
        show("commit", cmf_try_commit_metrics("m"));
        show("finalize", cmf_try_finalize());
    }
    printf("initialized %d\n", is_cmf_initialized());
    return 0;
}
"""

# fortran_errors MLMD: the optional status and last_error() of each procedure, one line each as ERRORS_C.
ERRORS_F90 = """
program errors
  use cmflib, only : cmf_type
  implicit none
  type(cmf_type) :: cmf
  character(len=4096) :: mlmd
  integer :: status
  call get_command_argument(1, mlmd)
  call cmf%log_metric("m", ["k"], ["1"], status=status)
  call show("log_before_init")
  call cmf%initialize(trim(mlmd), "fortran_errors", "native", "errors", status=status)
  call show("init")
  call cmf%commit_metrics("never_logged", status=status)
  call show("commit_never_logged")
  call cmf%log_metric("m", ["k"], ["1"], status=status)
  call show("log")
  call cmf%commit_metrics("m", status=status)
  call show("commit")
  call cmf%finalize(status=status)
  call show("finalize")
  call cmf%finalize(status=status)
  call show("finalize_again")
contains
  subroutine show(label)
    character(len=*), intent(in) :: label
    write(*, '(a, 1x, i0, 1x, a)') label, status, cmf%last_error()
  end subroutine show
end program errors
"""


# -- building and running ------------------------------------------------------------------------------------------


@dataclass
class Build:
    """The CMake build of cmf_core/native, and a compiler for more programs against its library."""
    dir: Path

    def compile(self, name: str, source: str, *flags: str) -> Path:
        """``source`` (C, or Fortran when ``name`` ends in .F90) built into an executable next to the library."""
        path = self.dir / "tests" / name
        path.parent.mkdir(exist_ok=True)
        path.write_text(source)
        fortran = name.endswith(".F90")
        compiler = ["gfortran", f"-I{self.dir / 'modules'}"] if fortran else \
            ["gcc", f"-I{source_dir() / 'include'}", "-Wall", "-Wextra", "-Werror"]
        exe = path.with_name(name.replace(".", "-"))  # original.c -> original-c, original.F90 -> original-F90
        done = subprocess.run([*compiler, *flags, str(path), f"-L{self.dir}", "-lcmflib", f"-Wl,-rpath,{self.dir}",
                               "-o", str(exe)], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        return exe


def environment(**extra: str) -> Dict[str, str]:
    """This process's environment with the venv (its dvc) first on PATH, and ``extra``."""
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}", **extra}


def run(argv: Sequence[Any], cwd: Path, env: Optional[Dict[str, str]] = None,
        timeout: float = 120) -> subprocess.CompletedProcess:
    """A program as a real process (see :func:`environment`): its exit status, stdout and stderr."""
    return subprocess.run([str(a) for a in argv], cwd=cwd, env=environment(**(env or {})), stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=timeout)


def statuses(out: str) -> Dict[str, Tuple[int, str]]:
    """The "label status message" lines of ERRORS_C and ERRORS_F90 as {label: (status, message)}."""
    lines = (line.split(" ", 2) for line in out.splitlines())
    return {parts[0]: (int(parts[1]), parts[2] if len(parts) > 2 else "") for parts in lines}


@pytest.fixture(scope="module")
def build(tmp_path_factory) -> Build:
    """cmake -S <source_dir()> -B <tmp> -DPython3_EXECUTABLE=<this Python>, then cmake --build."""
    folder = tmp_path_factory.mktemp("native-build")
    for argv in (["cmake", "-S", str(source_dir()), "-B", str(folder), f"-DPython3_EXECUTABLE={sys.executable}"],
                 ["cmake", "--build", str(folder), "--parallel", "4"]):
        done = subprocess.run(argv, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return Build(folder)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """A cmf workspace (``cmf init local``) the programs log into; tests log under pipelines of their own."""
    return module_workspace(tmp_path_factory, "native-ws")


# -- reading back --------------------------------------------------------------------------------------------------


@dataclass
class Run:
    """An execution as CmfQuery reads it: its stage, its name, and the steps of each Step_Metrics it output."""
    stage: str
    name: str
    committed: List[str]  # the metrics name of each Step_Metrics artifact, in the order committed
    metrics: Dict[str, pd.DataFrame]  # the steps of each metrics name (the file as last committed)
    files: Dict[str, Path]


def runs(mlmd: Path, pipeline: str) -> List[Run]:
    """The executions of ``pipeline`` in ``mlmd``, by id."""
    query = CmfQuery(str(mlmd))
    found = []
    for stage in query.get_pipeline_stages(pipeline):
        for execution in sorted(query.get_all_exe_in_stage(stage), key=lambda e: e.id):
            (kind,) = query.store.get_execution_types_by_id([execution.type_id])
            artifacts = query.get_all_artifacts_for_execution(execution.id)
            names = artifacts[artifacts["type"] == "Step_Metrics"].sort_values("id")["name"]
            files = [(Path(name.split(":")[0]), name) for name in names]  # <path>:<md5>:<execution>:<uuid>
            found.append(Run(stage, kind.name, [file.name for file, _ in files],
                             {file.name: query.get_metrics(name) for file, name in files},
                             {file.name: mlmd.parent / file for file, _ in files}))
    return found


# -- the original's programs, and what they wrote ------------------------------------------------------------------


@pytest.fixture(scope="module")
def originals(build, workspace) -> Path:
    """The examples of the build and the original's C and Fortran programs, run in the workspace: its mlmd."""
    mlmd = workspace / "mlmd"
    programs = [[build.dir / "cmf-c-example", mlmd], [build.dir / "cmf-fortran-example", mlmd],
                [build.compile("original.c", ORIGINAL_C.replace('"MLMD"', f'"{mlmd}"'))],
                [build.compile("original.F90", ORIGINAL_F90.replace('"MLMD"', f'"{mlmd}"'))]]
    with in_workspace(workspace):
        for argv in programs:
            done = run(argv, workspace)
            assert done.returncode == 0 and "cmf: error" not in done.stderr, (argv, done.stdout, done.stderr)
    return mlmd


def test_the_original_programs_log_their_pipeline_stage_and_execution(originals):
    query = CmfQuery(str(originals))
    assert {"testsk", "pipeline_name"} <= set(query.get_pipeline_names())
    c_runs, fortran_runs = runs(originals, "testsk"), runs(originals, "pipeline_name")
    assert [(r.stage, r.name, r.committed) for r in c_runs] == \
        [("testsk/testsk", "testsk", ["test_metrics", "test1_metrics"])] * 2  # the example, the original
    assert [(r.stage, r.name, r.committed) for r in fortran_runs] == \
        [("pipeline_name/context_name", "execution_name", ["test_metric"])] * 2
    for run_ in c_runs:
        assert run_.metrics["test_metrics"].to_dict("list") == {"train_loss": [10]}
        test1 = run_.metrics["test1_metrics"]
        assert test1.index.tolist() == [1]
        assert [test1["train1_loss"][1], test1["train2_loss"][1]] == [10, 10.12]
        assert list(test1["train3_loss"][1]) == [10, 10, 12]
    example, original = fortran_runs
    assert original.metrics["test_metric"].to_dict("list") == {"train_loss": [1]}
    assert example.metrics["test_metric"]["train_loss"].tolist() == [1, 0.5]  # two steps, a call without dict_size


def test_logged_values_keep_their_types_in_the_parquet_file(originals):
    """"10" an int64 column, "10.12" a float64 one, "[10,10.00,12]" a list of floats; never text."""
    for run_ in runs(originals, "testsk"):
        schema = pq.read_schema(run_.files["test1_metrics"])
        assert schema.field("train1_loss").type == pa.int64()
        assert schema.field("train2_loss").type == pa.float64()
        assert schema.field("train3_loss").type == pa.list_(pa.float64())
        assert pq.read_schema(run_.files["test_metrics"]).field("train_loss").type == pa.int64()
        frame = run_.metrics["test1_metrics"]
        assert isinstance(frame["train1_loss"][1].item(), int) and isinstance(frame["train2_loss"][1].item(), float)


def test_a_key_first_logged_at_a_later_step_keeps_its_type(originals):
    """The Fortran example logs accuracy "[0.9,0.95,1]" at step 2 only: a list, and nothing at step 1."""
    example = runs(originals, "pipeline_name")[0]
    assert pq.read_schema(example.files["test_metric"]).field("accuracy").type == pa.list_(pa.float64())
    accuracy = example.metrics["test_metric"]["accuracy"].tolist()
    assert accuracy[0] is None and list(accuracy[1]) == [0.9, 0.95, 1]


@pytest.fixture(scope="module")
def ui(originals, tmp_path_factory) -> Iterator[Target]:
    """``cmf ui --mlmd <workspace>/mlmd`` as a process of its own, once the programs have logged."""
    port = free_port()
    argv = [sys.executable, "-c", "from cmf_core.cli import main; main()", "ui", "--mlmd", str(originals),
            "--port", str(port)]
    with Server(argv, port, tmp_path_factory.mktemp("native-ui") / "ui.log"):
        yield Target("ui", f"http://127.0.0.1:{port}")


def test_the_ui_shows_the_executions_and_their_step_metrics(ui):
    executions = ui.api("/pipelines/testsk/executions")["items"]
    assert [(e["stage"], e["type"]) for e in executions] == [("testsk", "testsk")] * 2
    for execution in executions:
        data = ui.api(f"/executions/{execution['id']}")
        steps_of = {s["name"]: s["data"] for s in data["step_metrics"]}
        assert steps_of["test_metrics"] == {"steps": [1], "series": {"train_loss": [10]}}
        series = steps_of["test1_metrics"]["series"]
        assert steps_of["test1_metrics"]["steps"] == [1]
        assert series["train1_loss"] == [10] and series["train2_loss"] == [10.12]
        # the UI charts numbers: the list is left out (cmf_core/server/files.py step_series) or served as one
        assert series.get("train3_loss") in (None, [[10, 10, 12]])


# -- many steps, two commits ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def steps_program(build) -> Path:
    return build.compile("steps.c", STEPS_C)


def test_a_thousand_steps_are_all_written_in_order(steps_program, workspace):
    done = run([steps_program, workspace / "mlmd", "thousand", "run", 1000], workspace)
    assert done.returncode == 0, done.stderr
    (only,) = runs(workspace / "mlmd", "thousand")
    frame = only.metrics["training"]
    assert only.committed == ["training"]
    assert frame.index.tolist() == list(range(1, 1001))
    assert frame["step"].tolist() == list(range(1, 1001))
    assert frame["loss"].tolist() == [i + 0.5 for i in range(1, 1001)]


def test_committing_twice_writes_every_step_as_python_does(steps_program, workspace, monkeypatch):
    done = run([steps_program, workspace / "mlmd", "twice", "run", 5, 3], workspace)
    assert done.returncode == 0, done.stderr
    (from_c,) = runs(workspace / "mlmd", "twice")
    assert from_c.committed == ["training", "training"]

    monkeypatch.chdir(workspace)  # the same calls from Python's Cmf, into a pipeline of their own
    cmf = Cmf(filepath=str(workspace / "mlmd"), pipeline_name="twice_python")
    cmf.create_context("native")
    cmf.create_execution("run")
    for i in range(1, 6):
        cmf.log_metric("training", {"loss": i + 0.5, "step": i})
        if i in (3, 5):
            cmf.commit_metrics("training")
    cmf.finalize()
    (from_python,) = runs(workspace / "mlmd", "twice_python")
    assert from_c.metrics["training"]["step"].tolist() == [1, 2, 3, 4, 5]
    pd.testing.assert_frame_equal(from_c.metrics["training"], from_python.metrics["training"])


# -- errors --------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def errors(build) -> Path:
    return build.compile("errors.c", ERRORS_C)


def test_calls_before_cmf_init_fail_and_the_program_goes_on(errors, tmp_path):
    done = run([errors, "uninitialized"], tmp_path)
    assert done.returncode == 0
    said = statuses(done.stdout)
    for call in ("log", "commit", "finalize"):
        assert said[call][0] == NOT_INITIALIZED and "not initialized" in said[call][1], said
    assert all("call cmf_init" in said[call][1] for call in ("log", "commit", "finalize"))
    lines = done.stderr.splitlines()
    assert len(lines) == 3 and all(line.startswith("cmf: error: ") for line in lines), done.stderr
    assert said["initialized"][0] == 0


@pytest.mark.parametrize("where, env, status, words", [
    ("outside", {}, REFUSED, ["workspace"]),
    ("workspace", {"CMF_PYTHON": "/nonexistent"}, HELPER, ["CMF_PYTHON", "/nonexistent"]),
    ("workspace", {"CMF_PYTHON": "/bin/false"}, HELPER, ["helper", "stopped"]),
])
def test_cmf_init_that_cannot_start_says_why(errors, workspace, tmp_path, where, env, status, words):
    cwd = workspace if where == "workspace" else tmp_path  # a plain directory: no cmf init there
    done = run([errors, "init", cwd / "mlmd"], cwd, env)
    assert done.returncode == 0, done.stderr
    said = statuses(done.stdout)
    assert said["init"][0] == status and said["initialized"][0] == 0, said
    assert all(word in said["init"][1] for word in words), said["init"]


def test_bad_arguments_and_unknown_names_are_errors_and_cmf_goes_on(errors, workspace):
    done = run([errors, "arguments", workspace / "mlmd"], workspace)
    assert done.returncode == 0, done.stderr
    said = statuses(done.stdout)
    for call in ("init_null_mlmd", "init_empty_pipeline", "init_null_stage", "init_empty_execution", "init_twice",
                 "log_null_name", "log_empty_name", "log_negative_count", "log_null_keys", "log_empty_key",
                 "commit_null_name"):
        assert said[call][0] == ARGUMENT, (call, said[call])
    assert "NULL" in said["init_null_mlmd"][1] and "empty" in said["init_empty_pipeline"][1]
    assert "cmf_finalize" in said["init_twice"][1]
    assert said["commit_never_logged"][0] == REFUSED and "never_logged" in said["commit_never_logged"][1]
    assert [line for line in done.stderr.splitlines() if line.startswith("cmf: error:")] == \
        [f"cmf: error: {said['commit_never_logged'][1]}"]  # the void commit_metrics said it once
    assert [said[c] for c in ("init", "log", "commit", "finalize")] == [(OK, "")] * 4
    assert said["initialized"][0] == 0  # after cmf_finalize
    assert [r.committed for r in runs(workspace / "mlmd", "errors")] == [["m"]]


@pytest.fixture(scope="module")
def fortran_errors(build) -> Path:
    return build.compile("errors.F90", ERRORS_F90)


@pytest.mark.parametrize("inside", [True, False], ids=["workspace", "plain-dir"])
def test_fortran_status_and_last_error(fortran_errors, workspace, tmp_path, inside):
    cwd = workspace if inside else tmp_path
    done = run([fortran_errors, cwd / "mlmd"], cwd)
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr  # statuses asked for: nothing printed
    said = statuses(done.stdout)
    assert said["log_before_init"][0] == NOT_INITIALIZED and "cmf_init" in said["log_before_init"][1]
    if inside:
        assert said["init"] == (OK, "") and said["commit_never_logged"][0] == REFUSED
        assert "never_logged" in said["commit_never_logged"][1]
        assert [said[c] for c in ("log", "commit", "finalize")] == [(OK, "")] * 3
    else:
        assert said["init"][0] == REFUSED and "workspace" in said["init"][1]
        assert said["commit"][0] == NOT_INITIALIZED
    assert said["finalize_again"][0] == NOT_INITIALIZED


# -- threads and processes (MPI ranks) -----------------------------------------------------------------------------


def test_threads_logging_into_one_name_lose_and_tear_no_step(build, workspace):
    exe = build.compile("threads.c", THREADS_C, "-pthread")
    done = run([exe, workspace / "mlmd"], workspace)
    assert done.returncode == 0, done.stderr
    (only,) = runs(workspace / "mlmd", "threads")
    frame = only.metrics["shared"]
    assert len(frame) == 1000 and frame.notna().all().all()
    assert (frame["check"] == frame["thread"] * 1000 + frame["i"]).all(), "a step mixes the values of two calls"
    for thread, steps_of in frame.groupby("thread"):
        assert steps_of["i"].tolist() == list(range(250)), f"thread {thread}: steps lost or out of order"


def test_processes_each_log_their_execution_into_one_mlmd(steps_program, workspace):
    ranks = [subprocess.Popen([str(steps_program), str(workspace / "mlmd"), "ranks", f"rank{rank}", "200"],
                              cwd=workspace, env=environment(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for rank in range(4)]  # all at once
    stderr = [proc.communicate(timeout=120)[1] for proc in ranks]
    assert [proc.returncode for proc in ranks] == [0] * 4, [err[-2000:] for err in stderr]
    logged = runs(workspace / "mlmd", "ranks")
    assert sorted(r.name for r in logged) == [f"rank{rank}" for rank in range(4)]
    for run_ in logged:
        assert run_.committed == ["training"] and run_.metrics["training"]["step"].tolist() == list(range(1, 201))
    with sqlite3.connect(workspace / "mlmd") as db:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]


# -- valgrind, the CMake project's directory -----------------------------------------------------------------------


def test_valgrind_finds_no_leak_in_the_example(build, workspace):
    """The helper is another process: valgrind (not following children) checks only the C side."""
    done = run(["valgrind", "--leak-check=full", "--errors-for-leak-kinds=definite,indirect", "--error-exitcode=9",
                build.dir / "cmf-c-example", workspace / "valgrind.mlmd"], workspace, timeout=180)
    assert done.returncode == 0, done.stderr[-4000:]
    assert "All heap blocks were freed" in done.stderr or "definitely lost: 0 bytes" in done.stderr, done.stderr
    assert [r.committed for r in runs(workspace / "valgrind.mlmd", "testsk")] == [["test_metrics", "test1_metrics"]]


def test_the_module_prints_the_cmake_project_directory(tmp_path):
    done = run([sys.executable, "-m", "cmf_core.native", "--source-dir"], tmp_path)
    assert done.returncode == 0 and Path(done.stdout.strip()) == source_dir()
    assert (Path(done.stdout.strip()) / "CMakeLists.txt").is_file()
    wrong = run([sys.executable, "-m", "cmf_core.native", "--bogus"], tmp_path)
    assert wrong.returncode != 0 and "usage" in wrong.stderr


# -- the helper's value typing -------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, expected", [
    ("10", 10), ("-3", -3), ("+4", 4), (" 7 ", 7), ("007", 7),
    ("10.12", 10.12), ("1.", 1.0), (".5", 0.5), ("1e3", 1000.0), ("-2.5E-1", -0.25),
    ("[10,10.00,12]", [10, 10.0, 12]), ("[ 1 , 2.5 ]", [1, 2.5]), ("[]", []), ("[ ]", []), ("[-1]", [-1]),
    ("abc", "abc"), (" hi ", " hi "), ("", ""), ("1_000", "1_000"), ("0x10", "0x10"), ("[a,1]", "[a,1]"),
    ("[1,]", "[1,]"), ("[1", "[1"), ("True", "True"), ("1,2", "1,2"), ("1 2", "1 2"),
])
def test_value_types(text, expected):
    typed = value(text)
    assert typed == expected and type(typed) is type(expected)
    if isinstance(expected, list):
        assert [type(v) for v in typed] == [type(v) for v in expected]


@pytest.mark.parametrize("text, sign", [("nan", 0), ("NaN", 0), ("inf", 1), ("-inf", -1), ("Infinity", 1)])
def test_value_nan_and_inf_are_floats(text, sign):
    typed = value(text)
    assert isinstance(typed, float)
    assert math.isnan(typed) if sign == 0 else typed == sign * math.inf


def test_steps_of_a_commit_frame():
    assert steps(["2", "a", "b", "1", "x", "1", "k", "2.5", "0"]) == [{"a": 1, "b": "x"}, {"k": 2.5}, {}]
    with pytest.raises(ValueError):
        steps(["2", "a", "b", "1"])


def test_the_execution_records_the_programs_command_line(originals):
    """As Python's execution records its argv, a C program's does: the program and its arguments."""
    executions = CmfQuery(str(originals)).get_all_executions_in_pipeline("testsk")
    commands = {ast.literal_eval(command)[0].rsplit("/", 1)[-1]: ast.literal_eval(command)[1:]
                for command in executions["Execution"]}
    assert commands["cmf-c-example"] == [str(originals)] and "original-c" in commands
