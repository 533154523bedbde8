"""The record: result files, summaries (and later baselines and the HTML report)."""
