"""Perception pretraining of the tiny model's vision tower + merger (issue 3): labels.py,
stream.py, tower.py (its start), head.py, report.py, module.py (the Lightning loop) and
build.py (train once, cache, lock).

A random-init tiny Qwen2.5-VL cannot learn quality cues through the LM loss in a
CPU budget (OFFLINE.md, "Learning from scratch"), so its tower first learns to
see them on labels the synthetic generator knows exactly, never the MOS:

    distortion/<d>        level 0..4 of each of DISTORTIONS (technical images; aesthetic
                          images carry their exposure as under/overexposure level
                          2|stops| - 1; alignment images are undistorted)
    aesthetic/<k>         level index of each AESTHETIC_LEVELS factor, worst -> best
                          (exposure: signed stops -2..2 as class 0..4)
    object/<region>/...   colour, shape (where the region holds objects) and count 0..3
                          of the objects rendered in each alignment region

Images are fresh procedural samples without end: sample i of a task in batch b is
drawn from SeedSequence([STREAM_SALT, seed, task, index]), disjoint from the
dataset's (seed, task, index) streams. The tower starts with a low-level bias and stays a
standard Qwen2.5-VL: its patch embedding as a DCT filter bank (init_dct_stem) and its first
block as per-patch band energies of those coefficients (init_energy_block), and it learns
at a fraction of the head's learning rate so that training refines this start rather than
overwriting it (measured, 1200 steps: blur/JPEG strength SRCC .54/.44 at the full rate,
.71/.85 at 0.3x, .79/.90 at 0.1x; README). A small head (PerceptionHead) reads the
merger tokens, the tokens the LM sees, and is dropped afterwards: the saved folder
is the base model with the tower's weights replaced (the head is kept beside it as
perception_head.safetensors for benchmarks). The result is cached in the model
cache as <base>-perception-<hash of the settings> (ensure_perception).
"""
