"""The one training loop, the runs around it, BatchNorm re-estimation, resume, records."""
