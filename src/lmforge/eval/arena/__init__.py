"""Blind side-by-side human evaluation: `python -m lmforge.eval.arena serve|stats`."""
