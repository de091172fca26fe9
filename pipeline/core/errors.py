"""Errors users see: one line saying what is wrong and how to fix it, and a documented exit status.

Exit status 2: bad input or usage (params, data, checkpoints, model files; Typer's own usage
errors exit 2 too). Exit status 1: the input was fine and a gate was missed (`verify`).
"""


class PipelineError(Exception):
    """A problem with the user's input (params, data, checkpoints): one line, exit status 2."""

    exit_code = 2


class ConfigError(PipelineError):
    """params.yaml is malformed: unknown or wrongly typed key, or a value out of range."""


class DataError(PipelineError):
    """A dataset is missing, unreadable or inconsistent."""


class CheckpointError(PipelineError):
    """A checkpoint is missing, corrupt, or does not match what it is used for."""


class ModelFileError(PipelineError):
    """An ONNX file is missing, damaged, or was not made from the files it is checked against."""


class GateError(PipelineError):
    """An accuracy or parity threshold was missed: the inputs were fine, the model is not."""

    exit_code = 1
