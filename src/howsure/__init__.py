"""howsure: LLM classification with confidence that means what it says."""

__version__ = "0.1.0"
