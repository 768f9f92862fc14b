"""Studies and worked examples: `python -m examples.<name>` (see each module and the docs it names)."""
