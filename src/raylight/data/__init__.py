"""Data stage: sources, contract, preprocessing (Ray Data)."""
