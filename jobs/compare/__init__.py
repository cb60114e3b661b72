"""The comparison report job: report.md and report.png from finished arms' outputs."""
