"""--prompts FILE: a user's prompts reach every generation request, are hashed, and bad files say what is wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from quantfake.options import build_options
from quantfake.prompts import PROMPTS, prompts_sha256, read_prompts
from quantfake.session.engine import Session


def test_prompts_file_reaches_the_generation_request(tmp_path: Path) -> None:
    f = tmp_path / "p.txt"
    f.write_text("# the study's prompt\nA futuristic cyberpunk city with neon lights\n\n  a red fox  \n")
    o = build_options({"prompts": str(f), "generators": "sd3", "store": str(tmp_path / "store")})
    assert o.prompts == ("A futuristic cyberpunk city with neon lights", "a red fox")
    req = Session.open(o).fakes.request("sd3", "txt2img")
    assert req.prompts == o.prompts and req.prompt_for(1) == "a red fox"
    assert Session.open(build_options({"generators": "sd3"})).fakes.request("sd3", "txt2img").prompts == PROMPTS
    assert prompts_sha256(o.prompts) != prompts_sha256(None) == prompts_sha256(PROMPTS)


@pytest.mark.parametrize(("content", "message"), [(None, "no such file"), ("\n# only a comment\n", "no prompt"),
                                                  (b"\xff\xfe\x00", "not UTF-8")])
def test_bad_prompt_files_are_refused_with_the_reason(tmp_path: Path, content, message: str) -> None:
    f = tmp_path / "p.txt"
    if isinstance(content, bytes):
        f.write_bytes(content)
    elif content is not None:
        f.write_text(content)
    with pytest.raises(ValueError, match=message):
        read_prompts(f)
    with pytest.raises(ValueError, match="--prompts"):
        build_options({"prompts": str(f)})
