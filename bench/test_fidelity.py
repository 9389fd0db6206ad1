"""How far does quantization move the image? Paired drift against the reference precision, same seeds."""

from quantfake.session import fidelity_cell as fidelity


def test_fidelity(fidelity_cell, gate):
    gate(fidelity_cell, fidelity.measure_fidelity)
