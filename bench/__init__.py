"""Benchmarks of mapispool against real servers and raw clients (DESIGN §8).

Run them all with ``scripts/bench``; each prints ratios measured in the same run."""
