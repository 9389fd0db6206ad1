"""Test plugin: the fakes of precision ``$QF_TEST_JPEG_PRECISION`` are read back JPEG re-encoded at quality
``$QF_TEST_JPEG_QUALITY`` (default 30), so every cell that looks at them (fidelity against the reference precision,
detection) sees degraded images: a planted quality regression for the baseline gate and the compare gate.

Images keep their files; only what the session reads changes, and their hashes change with it so no cached score
of the clean image is reused.
"""

from __future__ import annotations

import dataclasses
import os


def pytest_configure(config) -> None:
    from quantfake.generate import GeneratedImage
    from quantfake.integrity import read_verified_image
    from quantfake.perturbations import jpeg_reencode
    from quantfake.session.fakes import FakeSource

    target = os.environ["QF_TEST_JPEG_PRECISION"]
    quality = int(os.environ.get("QF_TEST_JPEG_QUALITY", "30"))

    @dataclasses.dataclass
    class Reencoded(GeneratedImage):
        clean_sha256: str = ""  # the stored bytes' hash: they are verified, then re-encoded

        def open(self):
            return jpeg_reencode(read_verified_image(self.path, self.clean_sha256), quality)

    source_images = FakeSource.images

    def degraded(self, generator, precision, mode, role="eval", shard=(0, 1)):
        result = source_images(self, generator, precision, mode, role, shard)
        if precision != target or role != "eval":
            return result
        images = [Reencoded(im.seed, im.path, f"{im.sha256}-jpeg{quality}", im.prompt, im.sha256)
                  for im in result.images]
        return dataclasses.replace(result, images=images)

    FakeSource.images = degraded
