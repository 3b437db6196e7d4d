"""The applications: sentiment analysis and forecasting, end to end (data, models, baselines,
reports, command line)."""
