"""Shared bits of the tests that talk to a server on 127.0.0.1."""

from __future__ import annotations

# Penguin request records (the last one has a missing `sex`): valid for any penguins bundle.
PENGUIN_ROWS = [
    {"island": "Biscoe", "bill_length_mm": 45.2, "bill_depth_mm": 14.8, "flipper_length_mm": 212.0,
     "body_mass_g": 5200.0, "sex": "female"},
    {"island": "Dream", "bill_length_mm": 39.5, "bill_depth_mm": 17.8, "flipper_length_mm": 188.0,
     "body_mass_g": 3300.0, "sex": "female"},
    {"island": "Dream", "bill_length_mm": 49.0, "bill_depth_mm": 19.5, "flipper_length_mm": 210.0,
     "body_mass_g": 3950.0, "sex": "male"},
    {"island": "Torgersen", "bill_length_mm": 38.9, "bill_depth_mm": 17.8, "flipper_length_mm": 181.0,
     "body_mass_g": 3625.0, "sex": None},
]  # fmt: skip
