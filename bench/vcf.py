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
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO

from bench.bam import BAM_CHROMS
from bench.common import STOP_TIMEOUT, BenchError
from bench.harness import TOOL_TIMEOUT, run_tool
from remotefs.config import default_cache_root

VCF_DIR = "vcf"
VCF_NAME = "big.vcf.gz"
VCF_VERSION = "vcf-v1"
"""Bump when the generated VCF changes: the cache directory is named after it."""
VCF_SEED = 20241
VCF_RECORDS = 800_000
VCF_SAMPLES = 20
VCF_MIN_BYTES = 50_000_000
BUILD_TIMEOUT = 1800.0

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
    final = default_cache_root() / "bench" / VCF_VERSION
    vcf = final / VCF_NAME
    if vcf.is_file() and (final / f"{VCF_NAME}.tbi").is_file():
        print(f"bench: reusing {vcf} ({vcf.stat().st_size:,} bytes)", file=sys.stderr)
        return vcf
    for tool in ("bgzip", "tabix"):
        if shutil.which(tool) is None:
            raise BenchError(f"{tool} is not installed (apt-get install tabix)")
    final.parent.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix=f".{VCF_VERSION}.building-", dir=final.parent))
    try:
        t0 = time.monotonic()
        print(f"bench: building {vcf} (once; {VCF_RECORDS:,} records) ...", file=sys.stderr)
        with open(building / VCF_NAME, "wb") as out, open(building / "bgzip.log", "wb") as log:
            proc = subprocess.Popen(
                ["bgzip", "-@2", "-c"], stdin=subprocess.PIPE, stdout=out, stderr=log
            )
        assert proc.stdin is not None
        try:
            _write_vcf(proc.stdin)
            proc.stdin.close()
            rc = proc.wait(timeout=BUILD_TIMEOUT)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=STOP_TIMEOUT)
        if rc != 0:
            tail = (building / "bgzip.log").read_text(errors="replace")[-500:]
            raise BenchError(f"bgzip failed (exit {rc}): {tail}")
        run_tool(["tabix", "-p", "vcf", VCF_NAME], BUILD_TIMEOUT, cwd=building)
        size = (building / VCF_NAME).stat().st_size
        if size < VCF_MIN_BYTES:
            raise BenchError(f"the generated VCF has {size:,} bytes, fewer than {VCF_MIN_BYTES:,}")
        (building / "bgzip.log").unlink()
        shutil.rmtree(final, ignore_errors=True)
        os.rename(building, final)
        print(
            f"bench: built {vcf} ({size:,} bytes) in {time.monotonic() - t0:.0f} s",
            file=sys.stderr,
        )
    finally:
        shutil.rmtree(building, ignore_errors=True)
    return vcf


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
