"""cvscore: computer-vision losses and metrics, exported and served with the same numbers."""

__version__ = "0.1.0"
