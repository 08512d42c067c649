"""The pure async domain: models, orchestrators, providers, sources and ranking.

Nothing here imports Flask, gunicorn or the `mcp` service package (DESIGN §2)."""
