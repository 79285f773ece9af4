"""Kernel files as real kernels print them, for the readers to parse.

The Debian 12 guest (4 GiB, Linux 6.1, QEMU with free-page-reporting=on) is the reference; the
others differ from it where noted.
"""

from __future__ import annotations

KIB = 1024
MIB = 1 << 20

OSRELEASE_DEBIAN_6_1 = "6.1.0-18-amd64\n"
OSRELEASE_6_11 = "6.11.0-19-generic\n"
OSRELEASE_WSL2 = "6.6.87.2-microsoft-standard-WSL2\n"
OSRELEASE_CENTOS_7 = "3.10.0-1160.119.1.el7.x86_64\n"

MEMINFO_DEBIAN_6_1 = """\
MemTotal:        4012148 kB
MemFree:         1503212 kB
MemAvailable:    2191304 kB
Buffers:           21636 kB
Cached:           698532 kB
SwapCached:            0 kB
Active:           182416 kB
Inactive:         613064 kB
Active(anon):       1236 kB
Inactive(anon):    84588 kB
Active(file):     181180 kB
Inactive(file):   528476 kB
Unevictable:           0 kB
Mlocked:               0 kB
SwapTotal:             0 kB
SwapFree:              0 kB
Zswap:                 0 kB
Zswapped:              0 kB
Dirty:                 8 kB
Writeback:             0 kB
AnonPages:         75380 kB
Mapped:            61944 kB
Shmem:             10444 kB
KReclaimable:      52180 kB
Slab:              95212 kB
SReclaimable:      52180 kB
SUnreclaim:        43032 kB
KernelStack:        2432 kB
PageTables:         1872 kB
SecPageTables:         0 kB
NFS_Unstable:          0 kB
Bounce:                0 kB
WritebackTmp:          0 kB
CommitLimit:     2006072 kB
Committed_AS:     250384 kB
VmallocTotal:   34359738367 kB
VmallocUsed:       13404 kB
VmallocChunk:          0 kB
Percpu:              616 kB
HardwareCorrupted:     0 kB
AnonHugePages:         0 kB
ShmemHugePages:        0 kB
ShmemPmdMapped:        0 kB
FileHugePages:         0 kB
FilePmdMapped:         0 kB
HugePages_Total:       0
HugePages_Free:        0
HugePages_Rsvd:        0
HugePages_Surp:        0
Hugepagesize:       2048 kB
Hugetlb:               0 kB
DirectMap4k:       96128 kB
DirectMap2M:     4096000 kB
"""

# The same guest with a 1 GiB swap file on.
MEMINFO_DEBIAN_6_1_SWAP = MEMINFO_DEBIAN_6_1.replace(
    "SwapTotal:             0 kB\nSwapFree:              0 kB",
    "SwapTotal:       1048572 kB\nSwapFree:        1048572 kB",
)

# Linux 3.13 and older print no MemAvailable line (it came in 3.14).
MEMINFO_3_13 = """\
MemTotal:        2049988 kB
MemFree:         1446288 kB
Buffers:           28732 kB
Cached:           403684 kB
SwapCached:            0 kB
Active:           280276 kB
Inactive:         229628 kB
Active(anon):      77624 kB
Inactive(anon):      276 kB
Active(file):     202652 kB
Inactive(file):   229352 kB
Unevictable:           0 kB
Mlocked:               0 kB
SwapTotal:       2095100 kB
SwapFree:        2095100 kB
Dirty:                12 kB
Writeback:             0 kB
AnonPages:         77520 kB
Mapped:            24112 kB
Shmem:               412 kB
Slab:              52348 kB
SReclaimable:      33664 kB
SUnreclaim:        18684 kB
KernelStack:        1424 kB
PageTables:         3224 kB
"""

VMSTAT_DEBIAN_6_1 = """\
nr_free_pages 375803
nr_zone_inactive_anon 21147
nr_zone_active_anon 309
nr_zone_inactive_file 132119
nr_zone_active_file 45295
nr_zone_unevictable 0
nr_zone_write_pending 2
nr_mlock 0
nr_bounce 0
nr_zspages 0
nr_free_cma 0
numa_hit 1431548
numa_miss 0
numa_foreign 0
numa_interleave 1135
numa_local 1431548
numa_other 0
nr_inactive_anon 21147
nr_active_anon 309
nr_inactive_file 132119
nr_active_file 45295
nr_unevictable 0
nr_slab_reclaimable 13045
nr_slab_unreclaimable 10758
nr_isolated_anon 0
nr_isolated_file 0
workingset_nodes 0
workingset_refault_anon 0
workingset_refault_file 5211
workingset_activate_anon 0
workingset_activate_file 1034
workingset_restore_anon 0
workingset_restore_file 412
workingset_nodereclaim 0
nr_anon_pages 18845
nr_mapped 15486
nr_file_pages 174633
nr_dirty 2
nr_writeback 0
nr_writeback_temp 0
nr_shmem 2611
nr_shmem_hugepages 0
nr_shmem_pmdmapped 0
nr_file_hugepages 0
nr_file_pmdmapped 0
nr_anon_transparent_hugepages 0
nr_vmscan_write 0
nr_vmscan_immediate_reclaim 0
nr_dirtied 60375
nr_written 58211
nr_throttled_written 0
nr_kernel_misc_reclaimable 0
nr_foll_pin_acquired 0
nr_foll_pin_released 0
nr_kernel_stack 2432
nr_page_table_pages 468
nr_sec_page_table_pages 0
nr_swapcached 0
nr_dirty_threshold 90473
nr_dirty_background_threshold 45180
pgpgin 851728
pgpgout 233156
pswpin 0
pswpout 0
pgalloc_dma 0
pgalloc_dma32 1254863
pgalloc_normal 398211
pgalloc_movable 0
allocstall_dma 0
allocstall_dma32 0
allocstall_normal 0
allocstall_movable 0
pgskip_dma 0
pgskip_dma32 0
pgskip_normal 0
pgskip_movable 0
pgfree 2049123
pgactivate 61422
pgdeactivate 0
pglazyfree 0
pgfault 1923744
pgmajfault 2281
pglazyfreed 0
pgrefill 0
pgreuse 180123
pgsteal_kswapd 0
pgsteal_direct 0
pgsteal_khugepaged 0
pgdemote_kswapd 0
pgdemote_direct 0
pgdemote_khugepaged 0
pgscan_kswapd 0
pgscan_direct 0
pgscan_khugepaged 0
pgscan_direct_throttle 0
pgscan_anon 0
pgscan_file 0
pgsteal_anon 0
pgsteal_file 0
zone_reclaim_failed 0
pginodesteal 0
slabs_scanned 0
kswapd_inodesteal 0
kswapd_low_wmark_hit_quickly 0
kswapd_high_wmark_hit_quickly 0
pageoutrun 0
pgrotated 0
drop_pagecache 0
drop_slab 0
oom_kill 0
numa_pte_updates 0
numa_huge_pte_updates 0
numa_hint_faults 0
numa_hint_faults_local 0
numa_pages_migrated 0
pgmigrate_success 0
pgmigrate_fail 0
thp_migration_success 0
thp_migration_fail 0
thp_migration_split 0
compact_migrate_scanned 0
compact_free_scanned 0
compact_isolated 0
compact_stall 0
compact_fail 0
compact_success 0
compact_daemon_wake 0
compact_daemon_migrate_scanned 0
compact_daemon_free_scanned 0
htlb_buddy_alloc_success 0
htlb_buddy_alloc_fail 0
unevictable_pgs_culled 0
unevictable_pgs_scanned 0
unevictable_pgs_rescued 0
unevictable_pgs_mlocked 0
unevictable_pgs_munlocked 0
unevictable_pgs_cleared 0
unevictable_pgs_stranded 0
thp_fault_alloc 0
thp_fault_fallback 0
thp_fault_fallback_charge 0
thp_collapse_alloc 0
thp_collapse_alloc_failed 0
thp_file_alloc 0
thp_file_fallback 0
thp_file_fallback_charge 0
thp_file_mapped 0
thp_split_page 0
thp_split_page_failed 0
thp_deferred_split_page 0
thp_split_pmd 0
thp_scan_exceed_none_pte 0
thp_scan_exceed_swap_pte 0
thp_scan_exceed_share_pte 0
thp_split_pud 0
thp_zero_page_alloc 0
thp_zero_page_alloc_failed 0
thp_swpout 0
thp_swpout_fallback 0
balloon_inflate 0
balloon_deflate 0
balloon_migrate 0
swap_ra 0
swap_ra_hit 0
ksm_swpin_copy 0
cow_ksm 0
zswpin 0
zswpout 0
direct_map_level2_splits 3
direct_map_level3_splits 0
nr_unstable 0
"""

# Linux 5.4 (before 5.9): file refaults are counted without the _file suffix, no anon ones.
VMSTAT_5_4_EXCERPT = """\
nr_free_pages 361012
workingset_nodes 0
workingset_refault 7321
workingset_activate 2210
workingset_restore 0
workingset_nodereclaim 0
pswpin 0
pswpout 0
pgfault 1543211
pgmajfault 1911
pgsteal_kswapd 0
pgsteal_direct 0
pgscan_kswapd 0
pgscan_direct 0
drop_pagecache 0
compact_stall 0
"""

# The kernel ends each count with a space, the last one too.
BUDDYINFO_DEBIAN_6_1 = (
    "Node 0, zone      DMA      1      1      1      0      2"
    "      1      1      0      1      1      3 \n"
    "Node 0, zone    DMA32    518    402    291    163     97"
    "     54     31     17     12      8    212 \n"
    "Node 0, zone   Normal   1218   1023    635    433    223"
    "    103     40     15      6      3    109 \n"
)

STAT_DEBIAN_6_1 = """\
cpu  10132153 290696 3084719 46828483 16683 1021 25195 4312 0 0
cpu0 2533038 72674 771179 11707120 4170 256 6298 1078 0 0
cpu1 2533039 72674 771180 11707121 4171 255 6299 1078 0 0
cpu2 2533038 72674 771180 11707121 4171 255 6299 1078 0 0
cpu3 2533038 72674 771180 11707121 4171 255 6299 1078 0 0
intr 145627851 9 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0
ctxt 259286137
btime 1714032213
processes 153161
procs_running 1
procs_blocked 0
softirq 49217434 0 12154110 11 1329 6301 0 36108 19341876 0 17377699
"""

PSI_MEMORY_IDLE = """\
some avg10=0.00 avg60=0.00 avg300=0.00 total=0
full avg10=0.00 avg60=0.00 avg300=0.00 total=0
"""

PSI_MEMORY_STALLING = """\
some avg10=1.53 avg60=0.87 avg300=0.22 total=10213349
full avg10=0.42 avg60=0.19 avg300=0.04 total=3120021
"""

PSI_IO_IDLE = """\
some avg10=0.00 avg60=0.00 avg300=0.00 total=31205
full avg10=0.00 avg60=0.00 avg300=0.00 total=28817
"""

MOUNTS_DEBIAN_12 = """\
sysfs /sys sysfs rw,nosuid,nodev,noexec,relatime 0 0
proc /proc proc rw,nosuid,nodev,noexec,relatime 0 0
udev /dev devtmpfs rw,nosuid,relatime,size=1986472k,nr_inodes=496618,mode=755,inode64 0 0
devpts /dev/pts devpts rw,nosuid,noexec,relatime,gid=5,mode=620,ptmxmode=000 0 0
tmpfs /run tmpfs rw,nosuid,nodev,noexec,relatime,size=401432k,mode=755,inode64 0 0
/dev/vda1 / ext4 rw,relatime,errors=remount-ro 0 0
securityfs /sys/kernel/security securityfs rw,nosuid,nodev,noexec,relatime 0 0
tmpfs /dev/shm tmpfs rw,nosuid,nodev,inode64 0 0
tmpfs /run/lock tmpfs rw,nosuid,nodev,noexec,relatime,size=5120k,inode64 0 0
cgroup2 /sys/fs/cgroup cgroup2 rw,nosuid,nodev,noexec,relatime,nsdelegate,memory_recursiveprot 0 0
pstore /sys/fs/pstore pstore rw,nosuid,nodev,noexec,relatime 0 0
bpf /sys/fs/bpf bpf rw,nosuid,nodev,noexec,relatime,mode=700 0 0
"""

# Ubuntu 20.04 style: v1 controllers, cgroup2 only at /sys/fs/cgroup/unified.
MOUNTS_HYBRID = """\
sysfs /sys sysfs rw,nosuid,nodev,noexec,relatime 0 0
proc /proc proc rw,nosuid,nodev,noexec,relatime 0 0
/dev/vda1 / ext4 rw,relatime 0 0
tmpfs /sys/fs/cgroup tmpfs ro,nosuid,nodev,noexec,mode=755 0 0
cgroup2 /sys/fs/cgroup/unified cgroup2 rw,nosuid,nodev,noexec,relatime,nsdelegate 0 0
cgroup /sys/fs/cgroup/systemd cgroup rw,nosuid,nodev,noexec,relatime,xattr,name=systemd 0 0
cgroup /sys/fs/cgroup/memory cgroup rw,nosuid,nodev,noexec,relatime,memory 0 0
cgroup /sys/fs/cgroup/cpu,cpuacct cgroup rw,nosuid,nodev,noexec,relatime,cpu,cpuacct 0 0
"""

# CentOS 7: cgroup v1 only.
MOUNTS_CENTOS_7 = """\
sysfs /sys sysfs rw,seclabel,nosuid,nodev,noexec,relatime 0 0
proc /proc proc rw,nosuid,nodev,noexec,relatime 0 0
/dev/mapper/centos-root / xfs rw,seclabel,relatime,attr2,inode64,noquota 0 0
tmpfs /sys/fs/cgroup tmpfs ro,seclabel,nosuid,nodev,noexec,mode=755 0 0
cgroup /sys/fs/cgroup/systemd cgroup rw,seclabel,nosuid,nodev,noexec,relatime,xattr,release_agent=/usr/lib/systemd/systemd-cgroups-agent,name=systemd 0 0
cgroup /sys/fs/cgroup/memory cgroup rw,seclabel,nosuid,nodev,noexec,relatime,memory 0 0
cgroup /sys/fs/cgroup/cpu,cpuacct cgroup rw,seclabel,nosuid,nodev,noexec,relatime,cpuacct,cpu 0 0
"""  # noqa: E501

CGROUP_CONTROLLERS = "cpuset cpu io memory hugetlb pids rdma misc\n"

# /sys/bus/virtio/devices/virtioN/features of a QEMU virtio-balloon-pci: a 64-bit string, bit 0
# first. Bits: 1 STATS_VQ, 5 REPORTING, 28 INDIRECT_DESC, 29 EVENT_IDX, 32 VERSION_1.
FEATURES_BALLOON_FPR = "0100010000000000000000000000110010000000000000000000000000000000\n"
FEATURES_BALLOON_NO_FPR = "0100000000000000000000000000110010000000000000000000000000000000\n"
FEATURES_BALLOON_FPR_DEFLATE = "0110010000000000000000000000110010000000000000000000000000000000\n"
# What a balloon shows before a driver binds: nothing negotiated.
FEATURES_UNBOUND = "0000000000000000000000000000000000000000000000000000000000000000\n"
FEATURES_BLOCK = "0010001001100100000000000000110010000000000000000000000000000000\n"


# Captured in a 2 GiB lab guest (Debian 12's 6.1.0-57, THP always, 2026-11-30): a process
# touched 512 MiB of private anonymous memory, released all but 128 KiB of each 2 MiB with
# madvise(MADV_DONTNEED), and stayed alive. 255 huge pages wait on the deferred split queue:
# Active(anon) + Inactive(anon) - AnonPages - Shmem = 478 MiB held, MemFree unchanged.
MEMINFO_THP_HELD_6_1 = """\
MemTotal:        2012132 kB
MemFree:         1424796 kB
MemAvailable:    1359228 kB
Buffers:               0 kB
Cached:            15100 kB
SwapCached:            0 kB
Active:             5508 kB
Inactive:         535280 kB
Active(anon):       5508 kB
Inactive(anon):   525772 kB
Active(file):          0 kB
Inactive(file):     9508 kB
Unevictable:           0 kB
Mlocked:               0 kB
SwapTotal:             0 kB
SwapFree:              0 kB
Zswap:                 0 kB
Zswapped:              0 kB
Dirty:                 0 kB
Writeback:             0 kB
AnonPages:         36088 kB
Mapped:             7456 kB
Shmem:              5592 kB
KReclaimable:       9984 kB
Slab:              18984 kB
SReclaimable:       9984 kB
SUnreclaim:         9000 kB
KernelStack:         912 kB
PageTables:         1156 kB
SecPageTables:         0 kB
NFS_Unstable:          0 kB
Bounce:                0 kB
WritebackTmp:          0 kB
CommitLimit:     1006064 kB
Committed_AS:     536364 kB
VmallocTotal:   13743895347199 kB
VmallocUsed:        7660 kB
VmallocChunk:          0 kB
Percpu:              520 kB
HardwareCorrupted:     0 kB
AnonHugePages:         0 kB
ShmemHugePages:        0 kB
ShmemPmdMapped:        0 kB
FileHugePages:         0 kB
FilePmdMapped:         0 kB
HugePages_Total:       0
HugePages_Free:        0
HugePages_Rsvd:        0
HugePages_Surp:        0
Hugepagesize:       2048 kB
Hugetlb:               0 kB
DirectMap4k:       32640 kB
DirectMap2M:     2064384 kB
DirectMap1G:           0 kB
"""
VMSTAT_THP_HELD_6_1 = """\
nr_free_pages 356199
nr_zone_inactive_anon 131443
nr_zone_active_anon 1377
nr_zone_inactive_file 2377
nr_zone_active_file 0
nr_zone_unevictable 0
nr_zone_write_pending 0
nr_mlock 0
nr_bounce 0
nr_zspages 0
nr_free_cma 0
numa_hit 13856
numa_miss 0
numa_foreign 0
numa_interleave 636
numa_local 13856
numa_other 0
nr_inactive_anon 131443
nr_active_anon 1377
nr_inactive_file 2377
nr_active_file 0
nr_unevictable 0
nr_slab_reclaimable 2496
nr_slab_unreclaimable 2250
nr_isolated_anon 0
nr_isolated_file 0
workingset_nodes 0
workingset_refault_anon 0
workingset_refault_file 0
workingset_activate_anon 0
workingset_activate_file 0
workingset_restore_anon 0
workingset_restore_file 0
workingset_nodereclaim 0
nr_anon_pages 9022
nr_mapped 1864
nr_file_pages 3775
nr_dirty 0
nr_writeback 0
nr_writeback_temp 0
nr_shmem 1398
nr_shmem_hugepages 0
nr_shmem_pmdmapped 0
nr_file_hugepages 0
nr_file_pmdmapped 0
nr_anon_transparent_hugepages 0
nr_vmscan_write 0
nr_vmscan_immediate_reclaim 0
nr_dirtied 0
nr_written 0
nr_throttled_written 0
nr_kernel_misc_reclaimable 0
nr_foll_pin_acquired 0
nr_foll_pin_released 0
nr_kernel_stack 912
nr_page_table_pages 289
nr_sec_page_table_pages 0
nr_swapcached 0
pgpromote_success 0
pgpromote_candidate 0
nr_dirty_threshold 67933
nr_dirty_background_threshold 33925
pgpgin 0
pgpgout 0
pswpin 0
pswpout 0
pgalloc_dma 64
pgalloc_dma32 149271
pgalloc_normal 0
pgalloc_movable 0
pgalloc_device 0
allocstall_dma 0
allocstall_dma32 0
allocstall_normal 0
allocstall_movable 0
allocstall_device 0
pgskip_dma 0
pgskip_dma32 0
pgskip_normal 0
pgskip_movable 0
pgskip_device 0
pgfree 509236
pgactivate 1373
pgdeactivate 0
pglazyfree 0
pgfault 3773
pgmajfault 45
pglazyfreed 0
pgrefill 0
pgreuse 304
pgsteal_kswapd 0
pgsteal_direct 0
pgdemote_kswapd 0
pgdemote_direct 0
pgscan_kswapd 0
pgscan_direct 0
pgscan_direct_throttle 0
pgscan_anon 0
pgscan_file 0
pgsteal_anon 0
pgsteal_file 0
zone_reclaim_failed 0
pginodesteal 0
slabs_scanned 0
kswapd_inodesteal 0
kswapd_low_wmark_hit_quickly 0
kswapd_high_wmark_hit_quickly 0
pageoutrun 0
pgrotated 0
drop_pagecache 0
drop_slab 0
oom_kill 0
numa_pte_updates 0
numa_huge_pte_updates 0
numa_hint_faults 0
numa_hint_faults_local 0
numa_pages_migrated 0
pgmigrate_success 0
pgmigrate_fail 0
thp_migration_success 0
thp_migration_fail 0
thp_migration_split 0
compact_migrate_scanned 0
compact_free_scanned 0
compact_isolated 0
compact_stall 0
compact_fail 0
compact_success 0
compact_daemon_wake 0
compact_daemon_migrate_scanned 0
compact_daemon_free_scanned 0
htlb_buddy_alloc_success 0
htlb_buddy_alloc_fail 0
unevictable_pgs_culled 0
unevictable_pgs_scanned 0
unevictable_pgs_rescued 0
unevictable_pgs_mlocked 0
unevictable_pgs_munlocked 0
unevictable_pgs_cleared 0
unevictable_pgs_stranded 0
thp_fault_alloc 255
thp_fault_fallback 0
thp_fault_fallback_charge 0
thp_collapse_alloc 0
thp_collapse_alloc_failed 0
thp_file_alloc 0
thp_file_fallback 0
thp_file_fallback_charge 0
thp_file_mapped 0
thp_split_page 0
thp_split_page_failed 0
thp_deferred_split_page 255
thp_split_pmd 255
thp_scan_exceed_none_pte 0
thp_scan_exceed_swap_pte 0
thp_scan_exceed_share_pte 0
thp_split_pud 0
thp_zero_page_alloc 0
thp_zero_page_alloc_failed 0
thp_swpout 0
thp_swpout_fallback 0
balloon_inflate 0
balloon_deflate 0
balloon_migrate 0
swap_ra 0
swap_ra_hit 0
ksm_swpin_copy 0
cow_ksm 0
zswpin 0
zswpout 0
direct_map_level2_splits 3
direct_map_level3_splits 0
nr_unstable 0
"""
# The same guest right after `echo 2 > /proc/sys/vm/drop_caches`: the shrinker split all 255
# (thp_split_page 255), MemFree rose by 464 MiB, the page cache stayed.
MEMINFO_THP_SPLIT_6_1 = """\
MemTotal:        2012132 kB
MemFree:         1900320 kB
MemAvailable:    1834752 kB
Buffers:               0 kB
Cached:            15100 kB
SwapCached:            0 kB
Active:             5508 kB
Inactive:          45728 kB
Active(anon):       5508 kB
Inactive(anon):    36220 kB
Active(file):          0 kB
Inactive(file):     9508 kB
Unevictable:           0 kB
Mlocked:               0 kB
SwapTotal:             0 kB
SwapFree:              0 kB
Zswap:                 0 kB
Zswapped:              0 kB
Dirty:                 0 kB
Writeback:             0 kB
AnonPages:         36088 kB
Mapped:             7456 kB
Shmem:              5592 kB
KReclaimable:       9984 kB
Slab:              18984 kB
SReclaimable:       9984 kB
SUnreclaim:         9000 kB
KernelStack:         912 kB
PageTables:         1156 kB
SecPageTables:         0 kB
NFS_Unstable:          0 kB
Bounce:                0 kB
WritebackTmp:          0 kB
CommitLimit:     1006064 kB
Committed_AS:     536364 kB
VmallocTotal:   13743895347199 kB
VmallocUsed:        7660 kB
VmallocChunk:          0 kB
Percpu:              520 kB
HardwareCorrupted:     0 kB
AnonHugePages:         0 kB
ShmemHugePages:        0 kB
ShmemPmdMapped:        0 kB
FileHugePages:         0 kB
FilePmdMapped:         0 kB
HugePages_Total:       0
HugePages_Free:        0
HugePages_Rsvd:        0
HugePages_Surp:        0
Hugepagesize:       2048 kB
Hugetlb:               0 kB
DirectMap4k:       32640 kB
DirectMap2M:     2064384 kB
DirectMap1G:           0 kB
"""
VMSTAT_THP_SPLIT_6_1 = """\
nr_free_pages 475080
nr_zone_inactive_anon 9055
nr_zone_active_anon 1377
nr_zone_inactive_file 2377
nr_zone_active_file 0
nr_zone_unevictable 0
nr_zone_write_pending 0
nr_mlock 0
nr_bounce 0
nr_zspages 0
nr_free_cma 0
numa_hit 13857
numa_miss 0
numa_foreign 0
numa_interleave 636
numa_local 13857
numa_other 0
nr_inactive_anon 9055
nr_active_anon 1377
nr_inactive_file 2377
nr_active_file 0
nr_unevictable 0
nr_slab_reclaimable 2496
nr_slab_unreclaimable 2250
nr_isolated_anon 0
nr_isolated_file 0
workingset_nodes 0
workingset_refault_anon 0
workingset_refault_file 0
workingset_activate_anon 0
workingset_activate_file 0
workingset_restore_anon 0
workingset_restore_file 0
workingset_nodereclaim 0
nr_anon_pages 9022
nr_mapped 1864
nr_file_pages 3775
nr_dirty 0
nr_writeback 0
nr_writeback_temp 0
nr_shmem 1398
nr_shmem_hugepages 0
nr_shmem_pmdmapped 0
nr_file_hugepages 0
nr_file_pmdmapped 0
nr_anon_transparent_hugepages 0
nr_vmscan_write 0
nr_vmscan_immediate_reclaim 0
nr_dirtied 0
nr_written 0
nr_throttled_written 0
nr_kernel_misc_reclaimable 0
nr_foll_pin_acquired 0
nr_foll_pin_released 0
nr_kernel_stack 912
nr_page_table_pages 289
nr_sec_page_table_pages 0
nr_swapcached 0
pgpromote_success 0
pgpromote_candidate 0
nr_dirty_threshold 91703
nr_dirty_background_threshold 45795
pgpgin 0
pgpgout 0
pswpin 0
pswpout 0
pgalloc_dma 64
pgalloc_dma32 149273
pgalloc_normal 0
pgalloc_movable 0
pgalloc_device 0
allocstall_dma 0
allocstall_dma32 0
allocstall_normal 0
allocstall_movable 0
allocstall_device 0
pgskip_dma 0
pgskip_dma32 0
pgskip_normal 0
pgskip_movable 0
pgskip_device 0
pgfree 631641
pgactivate 1373
pgdeactivate 0
pglazyfree 0
pgfault 3773
pgmajfault 45
pglazyfreed 0
pgrefill 0
pgreuse 304
pgsteal_kswapd 0
pgsteal_direct 0
pgdemote_kswapd 0
pgdemote_direct 0
pgscan_kswapd 0
pgscan_direct 0
pgscan_direct_throttle 0
pgscan_anon 0
pgscan_file 0
pgsteal_anon 0
pgsteal_file 0
zone_reclaim_failed 0
pginodesteal 0
slabs_scanned 407
kswapd_inodesteal 0
kswapd_low_wmark_hit_quickly 0
kswapd_high_wmark_hit_quickly 0
pageoutrun 0
pgrotated 0
drop_pagecache 0
drop_slab 1
oom_kill 0
numa_pte_updates 0
numa_huge_pte_updates 0
numa_hint_faults 0
numa_hint_faults_local 0
numa_pages_migrated 0
pgmigrate_success 0
pgmigrate_fail 0
thp_migration_success 0
thp_migration_fail 0
thp_migration_split 0
compact_migrate_scanned 0
compact_free_scanned 0
compact_isolated 0
compact_stall 0
compact_fail 0
compact_success 0
compact_daemon_wake 0
compact_daemon_migrate_scanned 0
compact_daemon_free_scanned 0
htlb_buddy_alloc_success 0
htlb_buddy_alloc_fail 0
unevictable_pgs_culled 0
unevictable_pgs_scanned 0
unevictable_pgs_rescued 0
unevictable_pgs_mlocked 0
unevictable_pgs_munlocked 0
unevictable_pgs_cleared 0
unevictable_pgs_stranded 0
thp_fault_alloc 255
thp_fault_fallback 0
thp_fault_fallback_charge 0
thp_collapse_alloc 0
thp_collapse_alloc_failed 0
thp_file_alloc 0
thp_file_fallback 0
thp_file_fallback_charge 0
thp_file_mapped 0
thp_split_page 255
thp_split_page_failed 0
thp_deferred_split_page 255
thp_split_pmd 255
thp_scan_exceed_none_pte 0
thp_scan_exceed_swap_pte 0
thp_scan_exceed_share_pte 0
thp_split_pud 0
thp_zero_page_alloc 0
thp_zero_page_alloc_failed 0
thp_swpout 0
thp_swpout_fallback 0
balloon_inflate 0
balloon_deflate 0
balloon_migrate 0
swap_ra 0
swap_ra_hit 0
ksm_swpin_copy 0
cow_ksm 0
zswpin 0
zswpout 0
direct_map_level2_splits 3
direct_map_level3_splits 0
nr_unstable 0
"""
THP_ENABLED_ALWAYS = "[always] madvise never\n"
THP_ENABLED_MADVISE = "always [madvise] never\n"
