"""Chain-of-thought data by rejection sampling (`stage=cot`, METHOD.md step 1)."""
