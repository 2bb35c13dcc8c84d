"""The cmf metadata server (:mod:`.app`, :mod:`.store`) and the client the CLI uses to talk to it (:mod:`.client`).

The server needs the ``server`` extra (FastAPI, uvicorn, python-multipart); the client needs httpx.
Nothing here is imported by the core: the CLI and :mod:`cmf_core.api` import these modules on demand.
"""
