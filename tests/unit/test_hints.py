"""What a file's open fetches in advance: tails of htslib/HDF5 formats, small files, indexes."""

from __future__ import annotations

from remotefs.cache.hints import (
    TAIL_BYTES,
    WHOLE_FILE_BYTES,
    companion_names,
    open_ranges,
)

BIG = 300 << 20


def test_tail_of_formats_read_from_the_end() -> None:
    for name in (b"x.bam", b"X.CRAM", b"calls.vcf.gz", b"v.bcf", b"cells.h5ad", b"a.h5"):
        assert open_ranges(name, BIG) == [(BIG - TAIL_BYTES, BIG)], name
    for name in (b"reads.fastq.gz", b"notes.txt", b"x.bam.bai", b"bam"):
        assert open_ranges(name, BIG) == [], name


def test_small_files_whole_and_empty_ones_not_at_all() -> None:
    assert open_ranges(b"notes.txt", 1000) == [(0, 1000)]
    assert open_ranges(b"x.bam", WHOLE_FILE_BYTES) == [(0, WHOLE_FILE_BYTES)]
    assert open_ranges(b"x.bam", 0) == []


def test_companion_index_names_as_htslib_looks_for_them() -> None:
    assert companion_names(b"s.bam") == [b"s.bam.bai", b"s.bam.csi", b"s.bai", b"s.csi"]
    assert companion_names(b"s.cram")[:2] == [b"s.cram.crai", b"s.crai"]
    assert companion_names(b"c.vcf.gz")[:2] == [b"c.vcf.gz.tbi", b"c.vcf.gz.csi"]
    assert companion_names(b"ref.fa") == [b"ref.fa.fai", b"ref.fai"]
    assert companion_names(b"s.bam.bai") == []  # an index has no index
    assert companion_names(b"reads.fastq.gz") == []
