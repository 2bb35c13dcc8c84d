"""``cmf mcp`` (issue 25) against real processes, through the official MCP SDK's client: one ``cmf mcp --mlmd``
over a workspace and one ``cmf mcp --server`` over a ``cmf server`` (with a token) that the same pipelines were
pushed to; every tool test runs on both.  Then the server's own ``/mcp`` endpoint (auth, Origin, Host, body size)
and the command's errors.

The pipelines: test_ui_api's ``uip`` (prepare -> three train runs with parameters, metrics, step metrics and
models -> evaluate), one named with markup and holding a 5,000-character value, and ``fan``: a dataset read by
:data:`FAN_RUNS` runs that each write a file, so that a lineage around the dataset passes a small ``max_nodes``."""
from __future__ import annotations

import json
import subprocess
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator, Dict, Iterator, List, Tuple

import anyio
import httpx
import httpx2
import jsonschema
import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal
from mcp.client import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp.types import CallToolResult, InitializeResult, Tool

from cmf_core.mcp.tools import MAX_TEXT, TOOLS
from cmf_core.server.client import MetadataClient, push_metadata
from cmf_core.testing.metadata_server import MetadataServer
from cmf_core.testing.servers import free_port
from cmflib.cmf import Cmf
from cmflib.cmfquery import CmfQuery
from tests.conftest import CMF, Result, one_error_line, write
from tests.test_ui_api import (EVAL_ACCURACY, P, RUNS, STEPS, XSS, in_workspace, log_main, loss, md5,
                                module_workspace)

TOKEN = "mcp-token-for-tests"
FAN, FAN_RUNS = "fan", 30
FAN_NODES = 1 + 2 * FAN_RUNS  # fan.csv, the runs, what each wrote
LONG = "y" * 5000
DIGITS_MD5 = "12345678" + "abcdef" * 4  # an md5 whose 8-character prefix is all digits
LIMIT_MB = 1  # the server's body limit: the pushes fit, the 413 test sends more
TRACEBACK = ("Traceback", 'File "')
#: The bytes of the files log_main logs (an artifact's md5 is the md5 of its bytes).
TRAIN_CSV = md5(b"x,y\n1,2\n3,4\n")
RAW_CSV = md5(b"a,b\n1,2\n")


def model_md5(run: int) -> str:
    return md5(f"model {run}\n".encode())


# -- the workspace and the server ---------------------------------------------------------------------------


@dataclass
class Logged:
    root: Path
    uuids: Dict[str, str]  # prepare, train0 .. train2 (in RUNS' order), evaluate -> the execution's uuid


def log_odd(root: Path) -> None:
    """Pipeline XSS: markup in its name, a parameter and a custom property; a 5,000-character parameter and
    custom property; a dataset whose md5 starts with digits only."""
    cmf = Cmf(filepath=str(root / "mlmd"), pipeline_name=XSS)
    cmf.create_context("hostile")
    cmf.create_execution("hostile", {"note": XSS, "long": LONG})
    cmf.log_dataset_with_version(XSS, md5(b"xss"), "input", custom_properties={"comment": XSS, "blob": LONG})
    cmf.log_dataset_with_version("data/digits.csv", DIGITS_MD5, "input")
    cmf.finalize()


def log_fan(root: Path) -> None:
    """Pipeline FAN: FAN_RUNS runs of stage sweep, each reading data/fan.csv and writing out/fanN.csv."""
    cmf = Cmf(filepath=str(root / "mlmd"), pipeline_name=FAN)
    cmf.create_context("sweep")
    for run in range(FAN_RUNS):
        cmf.create_execution("sweep", {"seed": run})
        cmf.log_dataset_with_version("data/fan.csv", md5(b"fan"), "input")
        cmf.log_dataset_with_version(f"out/fan{run}.csv", md5(f"fan {run}".encode()), "output")
    cmf.finalize()


def logged_uuids(mlmd: Path) -> Dict[str, str]:
    """The uuids of log_main's executions, as cmflib's query API reads them from the mlmd file."""
    rates = [lr for lr, _, _ in RUNS]
    out = {}
    for e in CmfQuery(str(mlmd)).get_all_executions_in_pipeline(P).to_dict("records"):
        stage = e["Context_Type"].split("/", 1)[1]
        out[f"train{rates.index(e['custom_properties_lr'])}" if stage == "train" else stage] = e["Execution_uuid"]
    return out


@pytest.fixture(scope="module")
def logged(tmp_path_factory) -> Logged:
    root = module_workspace(tmp_path_factory, "mcp")
    with in_workspace(root):
        log_main(root)
        log_odd(root)
        log_fan(root)
    return Logged(root, logged_uuids(root / "mlmd"))


@pytest.fixture(scope="module")
def server(tmp_path_factory, logged) -> Iterator[MetadataServer]:
    """A ``cmf server`` with a token and a body limit of LIMIT_MB, holding the three pipelines."""
    with MetadataServer(tmp_path_factory.mktemp("mcp-server"), tokens=[TOKEN], max_body_mb=LIMIT_MB) as server:
        with in_workspace(logged.root), MetadataClient(server.url, TOKEN, retries=0) as client:
            for pipeline in (P, XSS, FAN):
                assert push_metadata(client, pipeline, "mlmd").status == "success"
        yield server


# -- an MCP client session on a cmf mcp process -------------------------------------------------------------


@asynccontextmanager
async def _stdio_session(args: List[str], cwd: Path, errlog: Path) -> AsyncIterator[Tuple[ClientSession,
                                                                                          InitializeResult]]:
    params = StdioServerParameters(command=CMF, args=["mcp", *args], cwd=str(cwd))  # the SDK's minimal env
    with open(errlog, "w") as err:
        async with stdio_client(params, errlog=err) as (read, write_), ClientSession(read, write_) as session:
            yield session, await session.initialize()


@dataclass
class Mcp:
    """A ``cmf mcp`` process and the SDK's client session on it, kept in a background event loop (``portal``)
    so that synchronous tests share one process: each start costs seconds of imports."""

    portal: BlockingPortal
    session: ClientSession
    init: InitializeResult
    tools: Dict[str, Tool]

    def run(self, method: str, *args: Any) -> Any:
        """``await session.<method>(*args)``."""
        return self.portal.call(getattr(self.session, method), *args)

    def call(self, tool: str, **args: Any) -> CallToolResult:
        result = self.run("call_tool", tool, args)
        for part in result.content:
            assert not any(t in part.text for t in TRACEBACK), part.text
        return result

    def ok(self, tool: str, **args: Any) -> Dict[str, Any]:
        """A successful call's structured content, checked against the tool's output schema and its JSON text."""
        result = self.call(tool, **args)
        assert not result.is_error, result.content[0].text
        jsonschema.validate(result.structured_content, self.tools[tool].output_schema)
        assert json.loads(result.content[1].text) == result.structured_content
        return result.structured_content

    def error(self, tool: str, **args: Any) -> str:
        """A failed call's message."""
        result = self.call(tool, **args)
        assert result.is_error and result.structured_content is None, result.content
        return result.content[0].text

    def executions(self) -> Dict[str, Dict[str, Any]]:
        """uip's executions on this source, by uuid (ids differ between the mlmd file and the server)."""
        return {e["uuid"]: e for e in self.ok("list_executions", pipeline=P, size=50)["items"]}


@contextmanager
def mcp_session(args: List[str], cwd: Path) -> Iterator[Mcp]:
    """``cmf mcp ARGS`` run in ``cwd`` by the SDK's stdio client (which stops it on leaving); its stderr must
    hold no traceback."""
    errlog = cwd / "cmf-mcp.log"
    with start_blocking_portal() as portal, \
            portal.wrap_async_context_manager(_stdio_session(args, cwd, errlog)) as (session, initialized):
        tools = {t.name: t for t in portal.call(session.list_tools).tools}
        yield Mcp(portal, session, initialized, tools)
    assert not any(t in errlog.read_text() for t in TRACEBACK), errlog.read_text()


@pytest.fixture(scope="module", params=["mlmd", "server"])
def mcp(request, logged, tmp_path_factory) -> Iterator[Mcp]:
    """``cmf mcp --mlmd FILE`` (run elsewhere: step metrics are read beside the file), or ``cmf mcp --server URL
    --token-file F`` on the server that holds the same pipelines."""
    cwd = tmp_path_factory.mktemp(f"mcp-{request.param}")
    if request.param == "mlmd":
        args = ["--mlmd", str(logged.root / "mlmd")]
    else:
        server = request.getfixturevalue("server")
        args = ["--server", server.url, "--token-file", str(write(cwd / "token", TOKEN + "\n"))]
    with mcp_session(args, cwd) as session:
        yield session


# -- the server, its tools and their answers ----------------------------------------------------------------


def test_initialize_lists_nine_read_only_tools_with_output_schemas(mcp):
    assert mcp.init.server_info.name == "cmf"
    assert set(mcp.tools) == {name for name, _ in TOOLS} and len(mcp.tools) == 9
    for tool in mcp.tools.values():
        assert tool.annotations.read_only_hint is True, tool.name
        assert tool.output_schema["type"] == "object" and tool.output_schema["properties"], tool.name
    templates = mcp.run("list_resource_templates").resource_templates
    assert {t.uri_template for t in templates} == {"cmf://pipeline/{name}", "cmf://execution/{uuid}",
                                                   "cmf://artifact/{md5}"}
    assert [p.name for p in mcp.run("list_prompts").prompts] == ["explain_model"]


def test_list_pipelines_counts(mcp):
    answer = mcp.ok("list_pipelines")
    by_name = {p["name"]: p for p in answer["items"]}
    assert answer["total"] == 3 and set(by_name) == {P, XSS, FAN}
    # uip: raw, train, environment, 3 models, 3 step metrics, 4 metrics; fan: fan.csv, environment, the outputs
    assert {k: by_name[P][k] for k in ("stages", "executions", "artifacts")} == \
        {"stages": 3, "executions": 2 + len(RUNS), "artifacts": 13}
    assert {k: by_name[FAN][k] for k in ("stages", "executions", "artifacts")} == \
        {"stages": 1, "executions": FAN_RUNS, "artifacts": 2 + FAN_RUNS}
    assert by_name[P]["uri"] == f"cmf://pipeline/{P}"


def test_list_executions_values_filter_sort_and_stage(mcp, logged):
    trains = mcp.ok("list_executions", pipeline=P, stage="train")
    assert trains["total"] == len(RUNS) and {"lr", "epochs"} <= set(trains["params"])
    assert "accuracy" in trains["metrics"]
    by_uuid = {e["uuid"]: e for e in trains["items"]}
    for run, (lr, epochs, accuracy) in enumerate(RUNS):
        e = by_uuid[logged.uuids[f"train{run}"]]
        assert (e["stage"], e["params"]["lr"], e["params"]["epochs"], e["metrics"]) == \
            ("train", lr, epochs, {"accuracy": accuracy})

    def uuids(**query: Any) -> List[str]:
        return [e["uuid"] for e in mcp.ok("list_executions", pipeline=P, **query)["items"]]

    assert set(uuids(filter="lr > 0.01")) == {logged.uuids["train0"], logged.uuids["train1"]}
    assert uuids(filter="lr > 0.01 and epochs >= 10") == [logged.uuids["train1"]]
    assert uuids(filter=f"metric.accuracy >= {EVAL_ACCURACY}") == [logged.uuids["train2"], logged.uuids["evaluate"]]
    assert uuids(stage="train", sort="lr", order="desc") == [logged.uuids[f"train{i}"] for i in range(3)]
    assert uuids(stage="train", sort="metric.accuracy", order="desc") == \
        [logged.uuids[f"train{i}"] for i in (2, 1, 0)]
    assert uuids(stage="prepare") == [logged.uuids["prepare"]]


def test_get_execution_by_id_uuid_and_uuid_prefix(mcp, logged):
    # a prefix of digits only is test_an_md5_prefix_of_digits_is_a_prefix_not_an_id's: a run whose prefix has a letter
    run = next(i for i in range(len(RUNS)) if not logged.uuids[f"train{i}"][:8].isdigit())
    uuid = logged.uuids[f"train{run}"]
    execution_id = mcp.executions()[uuid]["id"]
    answer = mcp.ok("get_execution", execution=str(execution_id))
    for name in (f"execution:{execution_id}", uuid, uuid[:8]):
        assert mcp.ok("get_execution", execution=name) == answer, name
    lr, epochs, accuracy = RUNS[run]
    assert (answer["uuid"], answer["stage"], answer["pipeline"]) == (uuid, "train", P)
    assert answer["uri"] == f"cmf://execution/{uuid}"
    assert {k: answer["params"][k] for k in ("lr", "epochs")} == {"lr": lr, "epochs": epochs}
    assert answer["metrics"] == {"accuracy": accuracy}
    assert {(a["type"], a["md5"]) for a in answer["inputs"]} >= {("Dataset", TRAIN_CSV)}
    assert answer["inputs_total"] == len(answer["inputs"]) == 2  # train.csv and the environment
    assert sorted(a["type"] for a in answer["outputs"]) == ["Metrics", "Model", "Step_Metrics"]
    assert next(a for a in answer["outputs"] if a["type"] == "Model")["md5"] == model_md5(run)
    [steps] = answer["step_metrics"]
    assert steps["name"] == "training" and steps["steps"] == STEPS
    losses = [loss(run, step) for step in range(STEPS)]
    assert steps["columns"]["loss"] == {"min": min(losses), "max": max(losses), "last": losses[-1]}


def test_list_artifacts_by_type_and_text(mcp):
    models = mcp.ok("list_artifacts", pipeline=P, type="Model")
    assert models["total"] == len(RUNS)
    assert {(a["name"].split(":")[0], a["md5"]) for a in models["items"]} == \
        {(f"models/model{i}.pkl", model_md5(i)) for i in range(len(RUNS))}
    assert models["type_counts"] == {"Dataset": 2, "Environment": 1, "Metrics": 4, "Model": 3, "Step_Metrics": 3}
    [found] = mcp.ok("list_artifacts", pipeline=P, search="model1")["items"]
    assert found["md5"] == model_md5(1) and found["uri"] == f"cmf://artifact/{model_md5(1)}"


def test_get_artifact_by_path_file_name_md5_and_md5_prefix(mcp, logged):
    executions = mcp.executions()
    answer = mcp.ok("get_artifact", artifact="models/model2.pkl")
    for name in ("model2.pkl", model_md5(2), model_md5(2)[:8], f"artifact:{answer['id']}"):
        assert mcp.ok("get_artifact", artifact=name) == answer, name
    assert (answer["type"], answer["path"], answer["md5"], answer["pipelines"]) == \
        ("Model", "models/model2.pkl", model_md5(2), [P])
    assert [e["uuid"] for e in answer["producers"]] == [logged.uuids["train2"]]
    assert [e["uuid"] for e in answer["consumers"]] == [logged.uuids["evaluate"]]
    assert answer["producers"][0]["id"] == executions[logged.uuids["train2"]]["id"]
    assert answer["pull_command"].startswith(f"cmf artifact pull -p {P} -a models/model2.pkl")
    data = mcp.ok("get_artifact", artifact="data/train.csv")
    assert [e["uuid"] for e in data["producers"]] == [logged.uuids["prepare"]]
    assert {e["uuid"] for e in data["consumers"]} == {logged.uuids[f"train{i}"] for i in range(len(RUNS))}


def test_an_md5_prefix_of_digits_is_a_prefix_not_an_id(mcp):
    """A name of digits only that is no record's id is searched for, as any md5 or uuid prefix (6+ characters)."""
    assert mcp.ok("get_artifact", artifact=DIGITS_MD5[:8])["path"] == "data/digits.csv"


def test_get_artifact_lists_a_bounded_number_of_consumers(mcp):
    answer = mcp.ok("get_artifact", artifact="data/fan.csv")
    assert answer["consumers_total"] == FAN_RUNS > len(answer["consumers"]) > 0
    assert f"{FAN_RUNS - len(answer['consumers'])} more consumers are not listed" in answer["notes"]


def test_lineage_upstream_of_a_model(mcp, logged):
    answer = mcp.ok("lineage", pipeline=P, focus="models/model2.pkl", hops=4, direction="up")
    nodes = answer["nodes"]
    assert (nodes[0]["key"], nodes[0]["hops"], nodes[0]["label"]) == (answer["focus"], 0, "model2.pkl")
    assert answer["direction"] == "up" and not answer["cut"]
    executions = {n["name"] for n in nodes if n["kind"] == "execution"}
    labels = {n["label"] for n in nodes}
    # what model2 was made from: train run 2 from train.csv, made by prepare from raw.csv; nothing downstream
    assert executions == {f"train {logged.uuids['train2'][:8]}", f"prepare {logged.uuids['prepare'][:8]}"}
    assert {"train.csv", "raw.csv"} <= labels and not labels & {"model0.pkl", "model1.pkl"}
    assert [n["hops"] for n in nodes] == sorted(n["hops"] for n in nodes)
    keys = {n["key"] for n in nodes}
    assert answer["edges"] and all({e["source"], e["target"]} <= keys for e in answer["edges"])


def test_lineage_is_cut_at_max_nodes_nearest_first(mcp):
    cut = mcp.ok("lineage", pipeline=FAN, focus="fan.csv", hops=2, max_nodes=20)
    assert (cut["cut"], cut["shown"], len(cut["nodes"]), cut["nodes_in_view"]) == (True, 20, 20, FAN_NODES)
    assert any(f"{FAN_NODES - 20} of {FAN_NODES} nodes were left out" in note for note in cut["notes"])
    first = cut["nodes"][0]
    assert (first["label"], first["hops"], first["key"]) == ("fan.csv", 0, cut["focus"])
    hops = [n["hops"] for n in cut["nodes"]]
    assert hops == sorted(hops) and hops[1:] == [1] * 19  # the runs that read it come before what they wrote
    keys = {n["key"] for n in cut["nodes"]}
    assert len(cut["edges"]) == 19 and all({e["source"], e["target"]} <= keys for e in cut["edges"])
    whole = mcp.ok("lineage", pipeline=FAN, focus="fan.csv", hops=2, max_nodes=FAN_NODES + 1)
    assert (whole["cut"], whole["shown"], whole["nodes_in_view"]) == (False, FAN_NODES, FAN_NODES)
    assert not any("left out" in note for note in whole["notes"]) and len(whole["edges"]) == 2 * FAN_RUNS


def test_model_card(mcp, logged):
    card = mcp.ok("model_card", model="models/model1.pkl")
    assert (card["model"]["path"], card["model"]["md5"]) == ("models/model1.pkl", model_md5(1))
    [producer] = card["producers"]
    lr, epochs, accuracy = RUNS[1]
    assert producer["uuid"] == logged.uuids["train1"]
    assert {k: producer["params"][k] for k in ("lr", "epochs")} == {"lr": lr, "epochs": epochs}
    assert producer["metrics"] == {"accuracy": accuracy}
    assert TRAIN_CSV in {a["md5"] for a in card["inputs"]} and card["consumers"] == []
    used = mcp.ok("model_card", model=model_md5(2))
    assert [e["uuid"] for e in used["consumers"]] == [logged.uuids["evaluate"]]


def test_compare_executions_shows_only_differences(mcp, logged):
    first, second = logged.uuids["train0"], logged.uuids["train1"]
    answer = mcp.ok("compare_executions", executions=[first, second])
    assert [e["uuid"] for e in answer["executions"]] == [first, second]
    assert answer["reference"] == answer["executions"][0]["id"]
    assert {(d["group"], d["key"]): d["values"] for d in answer["differences"]} == {
        ("param", "lr"): [RUNS[0][0], RUNS[1][0]], ("param", "epochs"): [RUNS[0][1], RUNS[1][1]],
        ("metric", "accuracy"): [RUNS[0][2], RUNS[1][2]]}
    assert answer["same"] == 4  # stage, type, command, git commit
    assert answer["packages"] == {"changed": [], "added": [], "removed": []}  # one environment


def test_search_by_uuid_prefix_md5_and_stage(mcp, logged):
    uuid = logged.uuids["evaluate"]
    hits = mcp.ok("search", text=uuid[:8])["items"]
    assert [(h["kind"], h["uri"]) for h in hits] == [("execution", f"cmf://execution/{uuid}")]
    first = mcp.ok("search", text=model_md5(0))["items"][0]
    assert (first["kind"], first["type"], first["exact"], first["label"]) == ("artifact", "Model", True, "model0.pkl")
    [stage, *others] = mcp.ok("search", text="train")["items"]  # the stage named so, then what holds the word
    assert (stage["kind"], stage["name"], stage["exact"]) == ("stage", "train", True)
    assert stage["uri"] == f"cmf://pipeline/{P}"
    assert "train.csv" in {h["label"] for h in others} and not any(h["exact"] for h in others)


def test_paging_walks_every_execution_once(mcp, logged):
    seen: List[str] = []
    page, pages = 1, None
    while pages is None or page <= pages:
        answer = mcp.ok("list_executions", pipeline=P, size=2, page=page)
        pages = answer["pages"]
        assert len(answer["items"]) == (2 if page < pages else 1)
        assert bool(answer["notes"]) == (page < pages)
        seen += [e["uuid"] for e in answer["items"]]
        page += 1
    assert pages == 3 and sorted(seen) == sorted(logged.uuids.values())  # no duplicates, no gaps
    assert "less than or equal to 50" in mcp.error("list_executions", pipeline=P, size=51)
    assert "page 4 is past the end" in mcp.error("list_executions", pipeline=P, size=2, page=4)


@pytest.mark.parametrize("tool, args, words", [
    ("list_executions", {"pipeline": "nope"}, ["no pipeline named 'nope'", f"'{P}'", f"'{FAN}'", XSS]),
    ("lineage", {"pipeline": "nope"}, ["no pipeline named 'nope'", f"'{P}'"]),
    ("list_executions", {"pipeline": f"{P}/train"}, [f"no pipeline named '{P}/train'", f"'{P}'"]),  # a stage's name
    ("get_execution", {"execution": "987654"}, ["no execution", "987654"]),
    ("get_execution", {"execution": "deadbeefdead"}, ["no execution", "deadbeefdead"]),
    ("get_artifact", {"artifact": "nothing.bin"}, ["no artifact", "nothing.bin"]),
    ("get_artifact", {"artifact": "model"}, ["names 3 artifacts", "model0.pkl", "model1.pkl", "model2.pkl"]),
    ("model_card", {"model": "data/raw.csv"}, ["raw.csv", "is a Dataset, not a model"]),
    ("list_executions", {"pipeline": P, "filter": "nosuch > 1"}, ["unknown column 'nosuch'", "lr", "epochs"]),
    ("lineage", {"pipeline": P, "focus": "nothing.bin"}, ["nothing in pipeline", "nothing.bin"]),
    ("compare_executions", {"executions": ["1"]}, ["executions"]),
])
def test_unknown_names_are_tool_errors_that_say_what_exists(mcp, tool, args, words):
    message = mcp.error(tool, **args)
    assert all(word in message for word in words), message


def test_markup_is_kept_verbatim_and_long_values_are_cut(mcp):
    assert XSS in mcp.call("list_pipelines").content[0].text
    [execution] = mcp.ok("list_executions", pipeline=XSS)["items"]
    assert execution["params"]["note"] == XSS and execution["pipeline"] == XSS
    cut = f"{LONG[:MAX_TEXT]}… [cut: {len(LONG):,} characters]"
    assert execution["params"]["long"] == cut
    artifact = mcp.ok("get_artifact", artifact=XSS)
    assert artifact["path"] == artifact["custom_properties"]["comment"] == XSS
    assert artifact["custom_properties"]["blob"] == cut
    assert any(f"longer than {MAX_TEXT} characters and cut" in note for note in artifact["notes"])


def test_resources_read_back_the_records(mcp, logged):
    for item in mcp.ok("list_pipelines")["items"]:  # the URIs the answers cite can be read, markup and all
        [content] = mcp.run("read_resource", item["uri"]).contents
        assert json.loads(content.text)["name"] == item["name"]
    uuid = logged.uuids["train1"]
    [content] = mcp.run("read_resource", f"cmf://execution/{uuid}").contents
    execution = json.loads(content.text)
    assert execution["uuid"] == uuid and execution["params"]["lr"] == RUNS[1][0]
    for cited in execution["inputs"] + execution["outputs"]:  # every type: Metrics are cited by their uuid
        [content] = mcp.run("read_resource", cited["uri"]).contents
        assert json.loads(content.text)["id"] == cited["id"], cited
    [content] = mcp.run("read_resource", f"cmf://artifact/{RAW_CSV}").contents
    assert json.loads(content.text)["path"] == "data/raw.csv"
    with pytest.raises(MCPError, match="no execution") as refused:
        mcp.run("read_resource", "cmf://execution/deadbeefdead")
    assert not any(t in str(refused.value) for t in TRACEBACK)


def test_the_explain_model_prompt(mcp, logged):
    [message] = mcp.run("get_prompt", "explain_model", {"model": "model2.pkl"}).messages
    text = message.content.text
    assert "models/model2.pkl" in text and f"cmf://execution/{logged.uuids['train2']}" in text
    assert '"stage": "train"' in text  # the producer's, and upstream of it the run that made its data:
    assert f'"label": "prepare {logged.uuids["prepare"][:8]}"' in text
    [message] = mcp.run("get_prompt", "explain_model", {"model": "nothing.bin"}).messages
    assert "could not read the model 'nothing.bin'" in message.content.text


# -- /mcp on cmf server ----------------------------------------------------------------------------------


INITIALIZE = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
    "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}
MCP_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
BEARER = {"Authorization": f"Bearer {TOKEN}"}


def post_mcp(server: MetadataServer, headers: Dict[str, str], **kwargs: Any) -> httpx.Response:
    kwargs.setdefault("json", INITIALIZE)
    return httpx.post(server.url + "/mcp", headers={**MCP_HEADERS, **headers}, timeout=30, **kwargs)


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong-token"}], ids=["none", "wrong"])
def test_http_endpoint_needs_the_token(server, headers):
    assert post_mcp(server, headers).status_code == 401


def test_http_endpoint_answers_the_sdk_client(server):
    answer = post_mcp(server, BEARER)
    assert answer.status_code == 200 and answer.json()["result"]["serverInfo"]["name"] == "cmf"

    async def session() -> Tuple[List[str], Dict[str, Any]]:
        async with httpx2.AsyncClient(headers=BEARER) as http, \
                streamable_http_client(server.url + "/mcp", http_client=http) as (read, write_), \
                ClientSession(read, write_) as s:
            await s.initialize()
            tools = [t.name for t in (await s.list_tools()).tools]
            return tools, (await s.call_tool("get_artifact", {"artifact": model_md5(1)})).structured_content

    tools, artifact = anyio.run(session)
    assert sorted(tools) == sorted(name for name, _ in TOOLS)
    assert (artifact["path"], artifact["pipelines"]) == ("models/model1.pkl", [P])


def test_http_endpoint_refuses_a_foreign_origin(server):
    foreign = {**BEARER, "Origin": "http://evil.example"}
    assert post_mcp(server, foreign).status_code == 403
    assert httpx.get(server.url + "/mcp", headers={**MCP_HEADERS, **foreign}, timeout=30).status_code == 403
    assert post_mcp(server, {**BEARER, "Origin": server.url}).status_code == 200  # its own origin passes


def test_http_endpoint_refuses_a_foreign_host(server):
    assert post_mcp(server, {**BEARER, "Host": "evil.example"}).status_code == 400
    assert post_mcp(server, {**BEARER, "Host": f"127.0.0.1:{server.port}"}).status_code == 200


def test_http_endpoint_refuses_a_body_over_the_limit(server):
    padded = {**INITIALIZE, "pad": "x" * (LIMIT_MB * 1024 * 1024 + 1)}
    assert post_mcp(server, BEARER, content=json.dumps(padded), json=None).status_code == 413


# -- the command -----------------------------------------------------------------------------------------


def run_mcp(args: List[str], cwd: Path) -> Result:
    """``cmf mcp ARGS`` with no input (a server that started would read end of file and stop)."""
    proc = subprocess.run([CMF, "mcp", *args], cwd=cwd, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=30)
    return Result(proc.returncode, proc.stdout, proc.stderr)


def test_cmf_mcp_without_an_mlmd_file_is_one_error_line(tmp_path):
    result = run_mcp([], tmp_path)
    assert result.code == 1 and result.out == ""
    assert one_error_line(result.err).startswith(f"cmf: error: no mlmd file at {tmp_path / 'mlmd'}")


@pytest.mark.parametrize("args, words", [
    (["--mlmd", "other", "--server", "http://127.0.0.1:9"], "give --mlmd or --server, not both"),
    (["--mlmd", "mlmd", "--server", "http://127.0.0.1:9"], "give --mlmd or --server, not both"),  # the default, given
    (["--token-file", "token"], "--token-file goes with --server"),
])
def test_cmf_mcp_usage_errors(tmp_path, args, words):
    write(tmp_path / "token", TOKEN)
    result = run_mcp(args, tmp_path)
    assert result.code == 2 and result.out == "" and words in result.err


def test_cmf_mcp_help_lists_the_tools(tmp_path):
    result = run_mcp(["--help"], tmp_path)
    assert result.code == 0 and all(name in result.out for name, _ in TOOLS)


def test_a_server_that_cannot_be_reached_is_a_tool_error(tmp_path):
    url = f"http://127.0.0.1:{free_port()}"
    with mcp_session(["--server", url, "--timeout", "5"], tmp_path) as closed:
        message = closed.error("list_pipelines")
    assert f"cannot reach the metadata server at {url}" in message


def test_a_token_the_server_refuses_says_how_to_give_one(server, tmp_path):
    with mcp_session(["--server", server.url, "--token-file", str(write(tmp_path / "t", "wrong\n"))],
                     tmp_path) as refused:
        message = refused.error("list_pipelines")
    assert "refused the token (HTTP 401" in message and "--token-file" in message and TOKEN not in message
