"""What to fetch when a file is opened, before the reader asks: the bytes every open reads.

Measured (../shared/workloads, strace of the real tools): every htslib open of a BAM, CRAM,
BCF or bgzipped VCF reads the head, then ``lseek(-28, SEEK_END)`` for the BGZF EOF marker,
then reads the **whole index** (``X.bam.bai``, ``X.vcf.gz.tbi``…); h5py reads the head, a
4 KiB page at the tail, then scattered small pieces. Each of those is a round trip in series
when fetched on demand; fetched at open they overlap each other and the signed-URL lookup.

- ``tail_range``: the last ``TAIL_BYTES`` of formats whose readers look at the end on open.
- Small files (``WHOLE_FILE_BYTES`` or less) are fetched whole at open: every tool that opens
  one reads most of it, and 1 MiB costs about one round trip however it is cut.
- ``seek_bytes``: after a seek into a BGZF file (a region query), htslib reads on through a
  few compressed blocks (up to 64 KiB each); fetching ``SEEK_BYTES`` at once from the seek
  saves the round trips of following them one kernel read at a time.
- ``companion_names``: the index files a reader of ``name`` will open next; the caller
  fetches those (up to ``INDEX_BYTES``) whole, in the background.

All of it is a hint: prefetched ranges go through the block cache like any read (single-flight,
counted, bounded), and a failed prefetch is never an error for anyone.
"""

from __future__ import annotations

TAIL_BYTES = 64 << 10
"""The BGZF EOF marker is the last 28 bytes; HDF5 readers look at the last 4 KiB page; the
kernel rounds such reads to its read-ahead, so a little more than a page is kept."""
WHOLE_FILE_BYTES = 1 << 20
SEEK_BYTES = 1 << 20
"""Sixteen maximal BGZF blocks. A 100 kb region of the bench's 354 MB BAM reads 830 KB on
from its seek, and the kernel asks for it in reads of 36 KiB, 128 KiB, 244 KiB, 480 KiB
(its own read-ahead ramp): with 256 KiB fetched at the seek the rest took a second round
trip (0.24 s at 40 ms); with 1 MiB the region is one round trip (0.20 s). A 1 kb region
fetches ~1 MB it does not read, a few ms of transfer against the 40+ ms a round trip costs."""
INDEX_BYTES = 32 << 20
"""Indexes larger than this (a CSI of a huge BAM) are left to the reader's own reads."""

BGZF = (b".bam", b".bcf", b".vcf.gz", b".bgz", b".bed.gz", b".gff.gz", b".gtf.gz")
"""Blocked gzip, read by htslib from an index's offset onwards."""
TAIL_READERS = (*BGZF, b".cram", b".h5", b".h5ad", b".hdf5", b".loom")
"""Names whose readers look at the end of the file on every open (htslib's EOF check, HDF5)."""

INDEXES = {
    b".bam": (b".bai", b".csi"),
    b".cram": (b".crai",),
    b".bcf": (b".csi",),
    b".vcf.gz": (b".tbi", b".csi"),
    b".bgz": (b".tbi", b".csi"),
    b".bed.gz": (b".tbi", b".csi"),
    b".gff.gz": (b".tbi", b".csi"),
    b".gtf.gz": (b".tbi", b".csi"),
    b".fa": (b".fai",),
    b".fasta": (b".fai",),
    b".fa.gz": (b".fai", b".gzi"),
    b".fasta.gz": (b".fai", b".gzi"),
}
"""Data suffix → the suffixes of its index, appended (``x.bam.bai``) or replacing the data
suffix's last part (``x.bai``), as htslib looks for them."""


def open_ranges(name: bytes, size: int) -> list[tuple[int, int]]:
    """Byte ranges of ``name`` worth fetching as soon as it is opened."""
    if size <= 0:
        return []
    if size <= WHOLE_FILE_BYTES:
        return [(0, size)]
    if name.lower().endswith(TAIL_READERS):
        return [(size - TAIL_BYTES, size)]
    return []


def companion_names(name: bytes) -> list[bytes]:
    """The names an index of ``name`` may have, most likely first."""
    lower = name.lower()
    for suffix, index_suffixes in INDEXES.items():
        if lower.endswith(suffix):
            stem = name[: len(name) - len(suffix.rsplit(b".", 1)[1]) - 1]
            return [name + s for s in index_suffixes] + [stem + s for s in index_suffixes]
    return []


def seek_bytes(name: bytes) -> int:
    """Bytes to fetch from a seek's offset in ``name`` (0 for anything but BGZF)."""
    return SEEK_BYTES if name.lower().endswith(BGZF) else 0
