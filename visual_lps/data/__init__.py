"""Datasets: OGBench generation and loading, and the chunked sampler every agent trains from."""
