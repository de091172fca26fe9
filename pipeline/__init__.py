"""SOKD compression pipeline: the library behind the `sokd` command and the DVC stages."""

__version__ = "0.1.0"
