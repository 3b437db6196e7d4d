"""Models built on the recurrent layers: language models, and more as tasks arrive."""
