"""``cmf mcp``: a Model Context Protocol server, so that coding assistants and agents can read pipelines,
executions, artifacts, lineage and model cards.

* :mod:`cmf_core.mcp.sources`: where the answers come from, an mlmd file or a ``cmf server``'s ``/api``; both
  through the read path of the UI (:mod:`cmf_core.server.reads`), so that an assistant and a page never differ.
* :mod:`cmf_core.mcp.tools`: the tools, resources and prompt, built on the official ``mcp`` SDK (the extra
  ``cmf-ml[mcp]``); every tool only reads.
* :mod:`cmf_core.mcp.schemas`: what each tool answers, as the output schemas it declares.

``cmf mcp`` serves over stdio; ``cmf server`` also serves the same tools over streamable HTTP at ``/mcp``.
"""
