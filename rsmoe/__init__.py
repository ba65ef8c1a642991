"""rsmoe: mixture-of-experts adapters on frozen foundation models for remote-sensing segmentation."""

__version__ = "0.1.0"
