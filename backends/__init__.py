"""The built-in storage backends of cmf, one entry-point plugin per ``cmf init`` type."""
