"""LPT packing of generator-precision work onto GPUs, and the splitting of groups heavier than a fair share."""

from __future__ import annotations

import pytest

from quantfake.packing import Unit, bin_loads, lpt, split_heavy


def test_light_groups_stay_whole_and_pack_heaviest_first() -> None:
    items = [("sd3-bf16", 28.0), ("flux-nf4", 170.0), ("sdxl-bf16", 50.0), ("flux-bf16", 150.0),
             ("sdxl-nf4", 90.0), ("sd3-nf4", 30.0)]
    units = split_heavy(items, bins=2)
    assert all(u.shards == 1 for u in units), "no group exceeds half of 518"
    packed = lpt(units, 2)
    assert sorted(bin_loads(packed)) == [250.0, 268.0]  # 170+50+30 | 150+90+28
    assert [u.key for u in packed[0]][0] == "flux-nf4" and [u.key for u in packed[1]][0] == "flux-bf16"


def test_a_group_heavier_than_a_fair_share_is_split_over_different_bins() -> None:
    items = [("flux-int8", 1000.0), ("sd3-bf16", 100.0), ("sdxl-bf16", 100.0), ("sd15-bf16", 100.0)]
    units = split_heavy(items, bins=4)
    flux = [u for u in units if u.key == "flux-int8"]
    assert [(u.shard, u.shards) for u in flux] == [(0, 4), (1, 4), (2, 4), (3, 4)]  # ceil(1000 / 325) = 4
    assert sum(u.cost for u in flux) == pytest.approx(1000.0)
    packed = lpt(units, 4)
    assert all(sum(u.key == "flux-int8" for u in b) == 1 for b in packed), "one shard of a group per GPU"
    whole = lpt(split_heavy(items, bins=4, max_shards=1), 4)
    assert max(bin_loads(packed)) < max(bin_loads(whole)) == 1000.0


def test_shards_are_capped_by_chunks_and_by_bins() -> None:
    assert {u.shards for u in split_heavy([("a", 10.0), ("b", 0.1)], bins=8, max_shards=2) if u.key == "a"} == {2}
    assert {u.shards for u in split_heavy([("a", 10.0)], bins=1)} == {1}
    assert lpt([], 3) == [[], [], []]


def test_every_unit_is_placed_once() -> None:
    units = [Unit(f"g{i}", float(i % 5 + 1)) for i in range(23)]
    packed = lpt(units, 3)
    assert sorted((u.key for b in packed for u in b), key=str) == sorted((u.key for u in units), key=str)
