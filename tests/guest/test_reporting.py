from __future__ import annotations

from vmreclaim.guest.observe.reporting import effective_order, read_reporting_path

from . import kernel_text as k
from .fakeroot import FakeRoot

ORDER_FILE = "/sys/module/page_reporting/parameters/page_reporting_order"


def test_balloon_with_reporting_negotiated(debian):
    path = read_reporting_path(debian.path)
    assert path.kind == "virtio-balloon"
    assert path.negotiated is True
    assert path.virtio is not None
    assert path.virtio.device == "virtio1"  # virtio0 is the disk


def test_balloon_without_free_page_reporting_is_not_negotiated(tmp_path):
    FakeRoot(tmp_path).virtio_device(
        "virtio0", "0x0005", k.FEATURES_BALLOON_NO_FPR, "virtio_balloon"
    )
    path = read_reporting_path(tmp_path)
    assert path.kind == "virtio-balloon"
    assert path.negotiated is False


def test_deflate_on_oom_is_feature_bit_2(tmp_path):
    FakeRoot(tmp_path).virtio_device(
        "virtio0", "0x0005", k.FEATURES_BALLOON_FPR_DEFLATE, "virtio_balloon"
    )
    path = read_reporting_path(tmp_path)
    assert path.virtio is not None
    assert path.virtio.deflate_on_oom
    assert path.negotiated


def test_balloon_without_a_driver_negotiates_nothing(tmp_path):
    FakeRoot(tmp_path).virtio_device("virtio0", "0x0005", k.FEATURES_UNBOUND, None)
    path = read_reporting_path(tmp_path)
    assert path.virtio is not None
    assert not path.virtio.driver_bound
    assert path.negotiated is False


def test_other_virtio_devices_are_no_balloon(tmp_path):
    FakeRoot(tmp_path).virtio_device("virtio0", "0x0002", k.FEATURES_BLOCK, "virtio_blk")
    assert read_reporting_path(tmp_path).kind == "none"


def test_hyper_v_guest_reports_through_hv_balloon_with_unknown_negotiation(tmp_path):
    (tmp_path / "sys/bus/vmbus/drivers/hv_balloon").mkdir(parents=True)
    path = read_reporting_path(tmp_path)
    assert path.kind == "hv-balloon"
    assert path.negotiated is None


def test_no_balloon_at_all(tmp_path):
    path = read_reporting_path(tmp_path)
    assert (path.kind, path.negotiated) == ("none", False)


def test_order_comes_from_the_module_parameter(tmp_path):
    FakeRoot(tmp_path).write(ORDER_FILE, "5\n")
    path = read_reporting_path(tmp_path)
    assert (path.order, path.order_is_default) == (5, False)


def test_missing_order_parameter_means_pageblock_order_9(tmp_path):
    path = read_reporting_path(tmp_path)
    assert (path.order, path.order_is_default, path.order_parameter_present) == (9, True, False)


def test_unset_order_reads_minus_one_and_means_the_default():
    assert effective_order(-1) == (9, True)


def test_unset_order_on_5_14_reads_max_order_and_means_the_default():
    assert effective_order(11) == (9, True)
