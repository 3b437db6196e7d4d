"""Data: text for language models (text.py), the long-range tasks of the literature (tasks.py),
series and audio loaders."""
