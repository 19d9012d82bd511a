"""remotefs: Seven Bridges / CAVATICA and Genestack ODM files as a read-only FUSE tree."""

__version__ = "0.1.0"
__all__ = ["__version__"]
