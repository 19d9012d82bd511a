"""The benchmark VCF: bgzipped and tabix-indexed, >= 50 MB, generated once, deterministically.

800,000 biallelic SNVs on the BAM's four chromosomes (``bench.bam.BAM_CHROMS``), 20 samples
with ``GT:DP:GQ``; positions drawn and summed per chromosome, so the text is already sorted.
Sample columns are slices of a pool of 2^20 random fields, so the file compresses like real
genotypes (~3.4x), not like repeated text. Built with ``bgzip`` and ``tabix -p vcf`` under
``$XDG_CACHE_HOME/remotefs/bench/vcf-v1`` (~15 s), reused afterwards.

``REGION`` is 100 kb in the middle of chr2; ``count_local`` is the reference count of a
region query (``tabix FILE REGION``) on the local file.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import IO

from bench.bam import BAM_CHROMS
from bench.built import BUILD_TIMEOUT, build_once, feed
from bench.harness import TOOL_TIMEOUT, run_tool

VCF_DIR = "vcf"
VCF_NAME = "big.vcf.gz"
VCF_VERSION = "vcf-v1"
"""Bump when the generated VCF changes: the cache directory is named after it."""
VCF_SEED = 20241
VCF_RECORDS = 800_000
VCF_SAMPLES = 20
VCF_MIN_BYTES = 50_000_000

REGION = "chr2:6450001-6550000"
"""100 kb in the middle of chr2 (13 Mbp)."""


def _write_vcf(sink: IO[bytes]) -> None:
    rng = random.Random(VCF_SEED)
    genotypes = ("0/0", "0/0", "0/0", "0/1", "0/1", "1/1", "./.")
    pool = [
        f"{rng.choice(genotypes)}:{rng.randrange(0, 80)}:{rng.randrange(0, 100)}"
        for _ in range(1 << 20)
    ]
    samples = "\t".join(f"S{i:02d}" for i in range(VCF_SAMPLES))
    head = ["##fileformat=VCFv4.2", '##FILTER=<ID=PASS,Description="All filters passed">']
    head += [f"##contig=<ID={name},length={length}>" for name, length in BAM_CHROMS]
    head += [
        '##INFO=<ID=DP,Number=1,Type=Integer,Description="Total depth">',
        '##INFO=<ID=AF,Number=A,Type=Float,Description="Allele frequency">',
        '##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">',
        '##FORMAT=<ID=DP,Number=1,Type=Integer,Description="Read depth">',
        '##FORMAT=<ID=GQ,Number=1,Type=Integer,Description="Genotype quality">',
        f"#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\t{samples}",
    ]
    sink.write(("\n".join(head) + "\n").encode())
    total = sum(length for _, length in BAM_CHROMS)
    for name, length in BAM_CHROMS:
        count = VCF_RECORDS * length // total
        step = 2 * length // count - 1  # mean gap ~ length / count
        pos = 0
        batch: list[str] = []
        for _ in range(count):
            pos += rng.randrange(1, step + 1)
            if pos > length:
                break
            ref = rng.randrange(4)
            alt = "ACGT"[(ref + rng.randrange(1, 4)) % 4]
            q = rng.randrange(0, len(pool) - VCF_SAMPLES)
            batch.append(
                f"{name}\t{pos}\t.\t{'ACGT'[ref]}\t{alt}\t{rng.randrange(10, 1000)}\tPASS\t"
                f"DP={rng.randrange(100, 2000)};AF={rng.random():.4f}\tGT:DP:GQ\t"
                + "\t".join(pool[q : q + VCF_SAMPLES])
                + "\n"
            )
            if len(batch) >= 20_000:
                sink.write("".join(batch).encode())
                batch.clear()
        sink.write("".join(batch).encode())


def ensure_vcf() -> Path:
    """The benchmark VCF (+ .tbi), built once under ``$XDG_CACHE_HOME/remotefs/bench``."""

    def build(building: Path) -> None:
        feed(["bgzip", "-@2", "-c"], _write_vcf, building, stdout=building / VCF_NAME)
        run_tool(["tabix", "-p", "vcf", VCF_NAME], BUILD_TIMEOUT, cwd=building)

    return build_once(
        VCF_VERSION,
        VCF_NAME,
        ".tbi",
        {"bgzip": "tabix", "tabix": "tabix"},
        f"{VCF_RECORDS:,} records",
        VCF_MIN_BYTES,
        build,
    )


def write_data(data: Path, vcf: Path) -> None:
    """``data/vcf/``: links to the built VCF and its index (served from the cache, no copy)."""
    (data / VCF_DIR).mkdir()
    for name in (VCF_NAME, f"{VCF_NAME}.tbi"):
        os.symlink(vcf.parent / name, data / VCF_DIR / name)


def tabix_count(target: str, region: str, cwd: Path) -> tuple[float, int]:
    """``tabix TARGET REGION``: (wall seconds, records); htslib may leave an index in ``cwd``."""
    seconds, out, _ = run_tool(["tabix", target, region], TOOL_TIMEOUT, cwd=cwd)
    return seconds, out.count(b"\n")


def count_local(vcf: Path, region: str) -> int:
    """The reference: the same query on the local file."""
    return tabix_count(str(vcf), region, vcf.parent)[1]
