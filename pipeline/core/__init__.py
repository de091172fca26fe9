"""Config, errors, files, registries, device and inputs: what every stage shares."""
