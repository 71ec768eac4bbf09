"""The evaluation report: from cohort and record files to report.json and a self-contained
report.html (tables and figures)."""
