"""Does a quantized detector still detect? Detector precision x detector on the reference-precision fakes.

Runs only when ``--detector-precisions`` names some (e.g. ``int8,w4,w2``).
"""


def test_detector_precision(detector_precision_cell, gate, qf_world):
    gate(detector_precision_cell, qf_world.detection_cell)
