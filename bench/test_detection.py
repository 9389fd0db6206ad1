"""Is a quantized generator's output still detected? One cell per generator x precision x mode x detector."""


def test_detection(detection_cell, gate, qf_world):
    gate(detection_cell, qf_world.detection_cell)
