"""Datasets: sources (MovieLens-100K, user logs), preparation, the prepared-dataset reader, synthetic data."""
