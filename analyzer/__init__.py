"""LLM-serving trace analyzer: where GPU time goes, and how many requests a replica should serve."""

__version__ = "0.1.0"
