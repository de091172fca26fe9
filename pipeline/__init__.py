"""SOKD compression pipeline: the library behind the `sokd` command and the DVC stages."""
