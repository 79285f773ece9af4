from __future__ import annotations

from vmreclaim.guest.observe.buddy import parse_buddyinfo, read_buddyinfo, split_free

from . import kernel_text as k

PAGE = 4096


def test_buddyinfo_lists_every_zone_with_eleven_orders():
    info = parse_buddyinfo(k.BUDDYINFO_DEBIAN_6_1)
    assert [(z.node, z.zone) for z in info.zones] == [(0, "DMA"), (0, "DMA32"), (0, "Normal")]
    assert info.orders == 11
    assert info.zones[2].free_blocks[0] == 1218
    assert info.zones[2].free_blocks[10] == 109


def test_free_bytes_by_order_sum_the_zones():
    by_order = parse_buddyinfo(k.BUDDYINFO_DEBIAN_6_1).free_bytes_by_order(PAGE)
    assert by_order[0] == (1 + 518 + 1218) * PAGE
    assert by_order[10] == (3 + 212 + 109) * (PAGE << 10)


def test_blocks_at_or_above_order_9_are_reportable():
    split = split_free(parse_buddyinfo(k.BUDDYINFO_DEBIAN_6_1), 9, PAGE)
    # order 9 blocks are 2 MiB, order 10 blocks 4 MiB
    assert split.reportable_bytes == (1 + 8 + 3) * 2 * k.MIB + (3 + 212 + 109) * 4 * k.MIB


def test_reportable_and_unreportable_add_up_to_all_free_blocks():
    info = parse_buddyinfo(k.BUDDYINFO_DEBIAN_6_1)
    split = split_free(info, 9, PAGE)
    assert split.reportable_bytes + split.unreportable_bytes == 374761 * PAGE
    assert split.unreportable_bytes == sum(info.free_bytes_by_order(PAGE)[:9])


def test_a_lower_reporting_order_makes_more_free_memory_reportable():
    info = parse_buddyinfo(k.BUDDYINFO_DEBIAN_6_1)
    assert split_free(info, 5, PAGE).reportable_bytes > split_free(info, 9, PAGE).reportable_bytes


def test_read_buddyinfo_is_none_without_the_file(tmp_path):
    assert read_buddyinfo(tmp_path) is None
