"""Datasets: registry and download, the synthetic ``shapes`` generator, preprocessing, loaders."""
