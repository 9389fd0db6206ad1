"""How far does quantization move the image? Paired drift against the reference precision, same seeds."""


def test_fidelity(fidelity_cell, gate, qf_world):
    gate(fidelity_cell, qf_world.fidelity_cell)
