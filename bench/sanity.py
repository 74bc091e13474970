"""The self-check every benchmark makes of its own result (bench/run_all.py): a figure
measured on work that went wrong (a clip that is not frame-exact, a share that does not
verify, an upload that stopped short) is worse than no figure, so the benchmark stops
with a one-line reason and a non-zero exit status instead of printing it."""

from __future__ import annotations


def require(ok: bool, what: str) -> None:
    """Stop the benchmark unless `ok`; `what` says what should have held."""
    if not ok:
        raise SystemExit(f"benchmark sanity check failed: {what}")
