"""Evaluation: held-out preference metrics (and, later, batched generation and scoring)."""
