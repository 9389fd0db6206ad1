"""Does a quantized detector still detect? Detector precision x detector on the reference-precision fakes.

Runs only when ``--detector-precisions`` names some (e.g. ``int8,w4,w2``).
"""

from quantfake.session import detection_cell as detection


def test_detector_precision(detector_precision_cell, gate):
    gate(detector_precision_cell, detection.measure_detection)
