"""Datasets: fetching them, the prepared artifact, and batches for a network."""
