"""Reports: a run's JSON results rendered as Markdown."""

from robustsnn.report.markdown import member_table, render_report, summary_table

__all__ = ["member_table", "render_report", "summary_table"]
