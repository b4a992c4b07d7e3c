"""Hydra Sweeper plugin: ``-m hydra/sweeper=raylight`` runs a Ray Tune sweep (see raylight.tune)."""
