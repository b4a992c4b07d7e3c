"""Evaluation: metrics, slices, fairness, explanations and an HTML report for a model bundle.

``run.run_evaluation`` reads the rows to judge (the bundle's own test split by default),
predicts with the bundle, and hands plain arrays to ``metrics``, ``fairness`` and ``explain``;
``report`` renders what they return. Nothing is imported at package import time.
"""
