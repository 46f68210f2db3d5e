"""Measurements of what the performance does: controllability (landmarks on rendered frames) and
motion statistics over long simulated sessions."""
