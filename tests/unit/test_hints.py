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


def test_a_seek_into_bgzf_fetches_a_few_blocks_at_once_and_others_nothing() -> None:
    from remotefs.cache.hints import SEEK_BYTES, seek_bytes
    from remotefs.cache.prefetch import ReadAhead

    assert seek_bytes(b"x.bam") == seek_bytes(b"c.vcf.gz") == SEEK_BYTES
    assert seek_bytes(b"x.bin") == seek_bytes(b"cells.h5ad") == seek_bytes(b"x.cram") == 0
    bgzf = ReadAhead(seek_bytes=SEEK_BYTES)
    assert bgzf.plan(100 << 20, 36864, BIG) == [(100 << 20, (100 << 20) + SEEK_BYTES)]
    assert bgzf.plan((100 << 20) + 36864, 65536, BIG) == []  # still inside the seek's fetch
    reading_on = [bgzf.plan(bgzf.reached, 131072, BIG) for _ in range(SEEK_BYTES // 131072 + 1)]
    first = next(p for p in reading_on if p)  # a window once the reader goes on past it
    assert first[0][0] == (100 << 20) + SEEK_BYTES
    plain = ReadAhead()
    assert plain.plan(100 << 20, 36864, BIG) == []  # random readers: exactly what they read
    assert bgzf.plan(BIG - 100, 4096, BIG) == [(BIG - 100, BIG)]  # never past the end
