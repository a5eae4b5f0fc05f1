"""aggregator: polls news portals' feeds and republishes them per category."""

__version__ = "0.1.0"
