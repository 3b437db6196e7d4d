"""Data: the long-range tasks of the literature (tasks.py), text, series and audio loaders."""
