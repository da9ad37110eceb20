"""Placeholder until the server fixtures land."""
