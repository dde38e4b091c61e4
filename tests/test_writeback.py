"""Write-behind: each completed block of a staging file is handed to the kernel's writeback once."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from service.storage import writeback
from service.storage.staging import StagingArea
from service.storage.writeback import WRITE_BEHIND, completed_blocks

MiB = 1024 * 1024


def test_a_write_hands_over_the_blocks_it_completed() -> None:
    block = 32 * MiB
    assert completed_blocks(0, MiB, block) is None
    assert completed_blocks(31 * MiB, MiB, block) == (0, block)
    assert completed_blocks(32 * MiB, MiB, block) is None
    assert completed_blocks(10 * MiB, 60 * MiB, block) == (0, 2 * block)  # one write may complete two
    assert completed_blocks(40 * MiB, 30 * MiB, block) == (block, block)  # a chunk resumed mid-block


def test_a_staging_file_written_through_the_cache_hands_each_block_over_once(tmp_path: Path, monkeypatch) -> None:
    calls: list[tuple[int, int, int, int]] = []
    monkeypatch.setattr(writeback, "_SYNC_FILE_RANGE", lambda *arguments: calls.append(arguments) or 0)
    staging = StagingArea(tmp_path)
    piece = os.urandom(MiB + 3)  # off the 4 KiB blocks: through the page cache, not past it
    count = 2 * WRITE_BEHIND // len(piece) + 4
    half = count // 2
    first = staging.open("upload", 0)
    for index in range(half):  # one request's chunk, then the rest in another, reopened
        first.write_at(piece, index * len(piece))
    first.close()
    second = staging.open("upload", half * len(piece))
    for index in range(half, count):
        second.write_at(piece, index * len(piece))
    second.close()

    assert [(start, length, flags) for _, start, length, flags in calls] == [
        (0, WRITE_BEHIND, writeback.SYNC_FILE_RANGE_WRITE),
        (WRITE_BEHIND, WRITE_BEHIND, writeback.SYNC_FILE_RANGE_WRITE),
    ]
    assert (tmp_path / "upload").read_bytes() == piece * count


def test_a_part_read_back_soon_is_left_to_the_kernel(tmp_path: Path, monkeypatch) -> None:
    calls: list[tuple[int, ...]] = []
    monkeypatch.setattr(writeback, "_SYNC_FILE_RANGE", lambda *arguments: calls.append(arguments) or 0)
    part = StagingArea(tmp_path).open("part", 0, read_back=True)
    part.write_at(os.urandom(WRITE_BEHIND + MiB + 3), 0)
    part.close()
    assert calls == []


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="sync_file_range is Linux's")
def test_the_kernel_takes_the_hint(tmp_path: Path) -> None:
    assert writeback._SYNC_FILE_RANGE is not None
    staging = StagingArea(tmp_path)
    written = staging.open("upload", 0)
    content = os.urandom(WRITE_BEHIND + MiB)
    written.write_at(content, 0)  # completes a block: handed over, no error raised
    written.close()
    assert (tmp_path / "upload").read_bytes() == content
