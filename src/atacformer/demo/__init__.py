"""``atacformer demo``: the whole workflow on the shipped data (CPU, offline) → ``report.html``, metrics
tables and the annotated cells as ``.h5ad``. The application, not a library tool: it calls the public
``io`` / ``train`` / ``tl`` / ``pl`` functions."""

from .run import (
    QUERY_DONOR,
    REFERENCE_DONOR,
    DemoSettings,
    load_data,
    pretrain_model,
    run_demo,
)

__all__ = ["QUERY_DONOR", "REFERENCE_DONOR", "DemoSettings", "load_data", "pretrain_model", "run_demo"]
