"""Errors users see: one line saying what is wrong and how to fix it."""


class PipelineError(Exception):
    """A problem with the user's input (params, data, checkpoints): one line, exit code 2."""


class ConfigError(PipelineError):
    """params.yaml is malformed: unknown, missing or wrongly typed key, or a value out of range."""


class DataError(PipelineError):
    """A dataset is missing, unreadable or inconsistent."""


class CheckpointError(PipelineError):
    """A checkpoint is missing, corrupt, or does not match what it is used for."""


class GateError(PipelineError):
    """An accuracy or parity threshold was missed."""
