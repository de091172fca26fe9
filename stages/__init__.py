"""Thin Typer commands, one per DVC stage: paths in, params loaded, one pipeline call, outputs."""
