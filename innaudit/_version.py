"""The package version, in one place every module can import without importing the package."""

__version__ = "0.1.0"
