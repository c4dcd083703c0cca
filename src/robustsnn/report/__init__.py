"""Reports: a run's JSON results rendered as Markdown, HTML and PNG plots."""

from robustsnn.report.html import markdown_to_html
from robustsnn.report.markdown import (
    diagnostics_table,
    energy_table,
    evaluation_section,
    member_table,
    render_report,
    summary_table,
    sweep_table,
    time_steps_table,
)
from robustsnn.report.plots import render_plots

__all__ = [
    "diagnostics_table",
    "energy_table",
    "evaluation_section",
    "markdown_to_html",
    "member_table",
    "render_plots",
    "render_report",
    "summary_table",
    "sweep_table",
    "time_steps_table",
]
