"""Haystack files are read as the paper's harness reads them: text mode, universal newlines."""

from __future__ import annotations

from pathlib import Path

import pytest

from longreach.jobs.needle.haystack import load_haystack

pytestmark = pytest.mark.unit


def test_crlf_and_lone_cr_become_lf(tmp_path: Path) -> None:
    folder = tmp_path / "essays"
    folder.mkdir()
    (folder / "a.txt").write_bytes(b"One line.\r\nTwo lines.\rThree.\r\r\n")
    (folder / "b.txt").write_bytes("Caf\u00e9 au lait.\r\n".encode())
    hay = load_haystack(str(folder))
    assert hay.text == "One line.\nTwo lines.\nThree.\n\nCaf\u00e9 au lait.\n"
    assert hay.files == ["a.txt", "b.txt"]
    # a single file and a glob read the same way
    assert load_haystack(str(folder / "a.txt")).text == "One line.\nTwo lines.\nThree.\n\n"
    assert "\r" not in load_haystack(f"{folder}/*.txt").text
