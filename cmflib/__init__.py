"""Compatibility facade: the import paths of HPE's cmflib (``cmflib.cmf``, ``cmflib.cmfquery``) over cmf_core."""
