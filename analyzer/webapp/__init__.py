"""Library side of the Streamlit app (``app.py`` only lays out what this returns).

- :mod:`.uploads`: size limits, content-hash cache keys, temporary workspace, safe zips.
- :mod:`.samples`: the bundled sample traces.
- :mod:`.session`: one analysis with progress and one-line errors.
- :mod:`.page`: the page model (metrics, finding cards, downloads, figure sections).

Nothing here imports Streamlit.
"""

from . import isolation  # noqa: F401 (wa.isolation)
from .page import Card, Download, Metric, Page, build_page, display_table
from .samples import Sample, list_samples
from .session import (
    Options,
    ProgressRelay,
    capacity_available,
    error_line,
    perfetto_export,
    preset_names,
    run_analysis,
    run_uploads,
)
from .uploads import Limits, Upload, content_key, prepared_inputs

__all__ = [
    "Card",
    "Download",
    "Limits",
    "Metric",
    "Options",
    "Page",
    "ProgressRelay",
    "Sample",
    "Upload",
    "build_page",
    "capacity_available",
    "content_key",
    "display_table",
    "error_line",
    "list_samples",
    "perfetto_export",
    "prepared_inputs",
    "preset_names",
    "run_analysis",
    "run_uploads",
]
