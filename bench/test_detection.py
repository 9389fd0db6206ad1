"""Is a quantized generator's output still detected? One cell per generator x precision x mode x detector."""

from quantfake.session import detection_cell as detection


def test_detection(detection_cell, gate):
    gate(detection_cell, detection.measure_detection)
