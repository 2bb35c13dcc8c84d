"""Metadata: the Cmf logging API on ML Metadata, DVC-compatible versioning, queries and export."""
