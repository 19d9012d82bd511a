"""Real tools on the mount and on the source files: identical stdout and exit status.

Every command runs twice, with the same argv: once with the demo tree's folder as its working
directory, once with the folder where the mount shows the same files (SB mirrors the tree; ODM
shows every file flat under ``all/``, so an index still sits beside its data file, and the
CRAM reference beside the CRAM). File names are relative, so outputs that print a path match.

Each test runs once per platform (the module-scoped ``mounted`` fixture). A test is skipped
only when the tool it runs is not installed (``scripts/setup`` installs them all).
"""

from __future__ import annotations

import os
import shlex
import shutil
import stat
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from remotefs.emulator.dataset import SIDECAR_SUFFIX
from remotefs.emulator.demo import MANY_COUNT, awkward_names
from tests.support.expect import Source, mount_files
from tests.support.fuse import Mount

TIMEOUT = 300
SHOWN = 1500  # bytes of each output quoted in a failure message

# Never let htslib fetch a CRAM reference from the internet: -T is always given.
_NOREF = Path(tempfile.gettempdir()) / "remotefs-test-tools-noref"
ENV = dict(
    os.environ,
    LC_ALL="C",
    REF_PATH=f"{_NOREF}/%s",
    REF_CACHE=str(_NOREF / "cache"),
    PYTHONWARNINGS="ignore",
)


# --- helpers: run a command on both sides and compare -------------------------------------------


@dataclass(frozen=True)
class Run:
    argv: tuple[str, ...]
    cwd: Path
    rc: int
    stdout: bytes
    stderr: bytes

    def show(self, label: str) -> str:
        def cut(data: bytes) -> str:
            more = f"... [{len(data)} bytes in all]" if len(data) > SHOWN else ""
            return data[:SHOWN].decode(errors="backslashreplace") + more

        return (
            f"--- {label}: cwd={self.cwd} rc={self.rc}\n"
            f"$ {shlex.join(self.argv)}\n"
            f"stdout:\n{cut(self.stdout)}\nstderr:\n{cut(self.stderr)}\n"
        )


def run(argv: list[str] | tuple[str, ...], cwd: Path) -> Run:
    done = subprocess.run(
        list(argv), cwd=cwd, env=ENV, capture_output=True, timeout=TIMEOUT, check=False
    )
    return Run(tuple(argv), cwd, done.returncode, done.stdout, done.stderr)


def sh(script: str, *args: str) -> list[str]:
    """A bash pipeline (pipefail) with file names passed as "$1"..., never spliced in."""
    return ["bash", "-o", "pipefail", "-c", script, "sh", *args]


def first_difference(a: bytes, b: bytes) -> str:
    la, lb = a.splitlines(), b.splitlines()
    for i, (x, y) in enumerate(zip(la, lb, strict=False)):
        if x != y:
            return f"first difference at line {i + 1}:\n  local: {x[:300]!r}\n  mount: {y[:300]!r}"
    return f"local has {len(la)} lines, mount has {len(lb)} (one is a prefix of the other)"


def assert_same(local: Run, mount: Run, *, output_required: bool = True) -> None:
    both = local.show("local") + mount.show("mount")
    assert local.rc == 0, "the command fails on the local originals (a test bug)\n" + both
    if output_required:
        assert local.stdout, "the command prints nothing on the local originals\n" + both
    if (mount.rc, mount.stdout) != (local.rc, local.stdout):
        pytest.fail(
            f"mount differs from local: rc local={local.rc} mount={mount.rc}; "
            f"{first_difference(local.stdout, mount.stdout)}\n{both}"
        )


def compare(argv: list[str], local_cwd: Path, mount_cwd: Path, **kw: bool) -> tuple[Run, Run]:
    local, mount = run(argv, local_cwd), run(argv, mount_cwd)
    assert_same(local, mount, **kw)
    return local, mount


def need(*tools: str) -> None:
    for tool in tools:
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (scripts/setup installs it)")


# --- helpers: where the demo's files are, locally and on the mount ------------------------------


def _platform(request: pytest.FixtureRequest) -> str:
    return request.node.callspec.params["mounted"]


def locate(mounted: Mount, demo_tree: Path, platform: str, rel: str) -> Path:
    """The mount path of the demo tree's file ``rel`` (from tests.support.expect)."""
    local = demo_tree / rel
    hits = [m for m, src in mount_files(demo_tree, platform).items() if src.path == local]
    assert len(hits) == 1, f"{rel}: expected on the mount as exactly one path, got {hits}"
    return mounted.path / hits[0]


def folders(mounted: Mount, demo_tree: Path, platform: str, rels: tuple[str, ...]):
    """(local folder, mount folder) holding all of ``rels`` together, on each side."""
    local_dirs = {(demo_tree / rel).parent for rel in rels}
    mount_dirs = {locate(mounted, demo_tree, platform, rel).parent for rel in rels}
    assert len(local_dirs) == 1 and len(mount_dirs) == 1, (rels, local_dirs, mount_dirs)
    return local_dirs.pop(), mount_dirs.pop()


def study_dir(mounted: Mount, folder: str) -> Path:
    """ODM: ``studies/<folder> [GSF…]``, the study made from the demo's top-level folder."""
    hits = [
        p
        for p in (mounted.path / "studies").iterdir()
        if p.name.startswith(f"{folder} [GSF") and p.name.endswith("]")
    ]
    assert len(hits) == 1, f"studies/{folder} [GSF…]: found {[p.name for p in hits]}"
    return hits[0]


def listing_dirs(mounted: Mount, platform: str, folder: str) -> list[Path]:
    """The mount folders that list exactly the files of the demo's top-level ``folder``."""
    if platform == "sevenbridges":
        return [mounted.path / folder]
    return [study_dir(mounted, folder)]


# --- the commands -------------------------------------------------------------------------------

EX1_BAM = ("bam/ex1.bam", "bam/ex1.bam.bai")
RANGE_BAM = ("bam/range.bam", "bam/range.bam.bai")
CRAM = ("cram/range.cram", "cram/range.cram.crai", "cram/ce.fa", "cram/ce.fa.fai")
FASTA = ("cram/ce.fa", "cram/ce.fa.fai")
CHR22 = ("vcf/chr22.vcf.gz", "vcf/chr22.vcf.gz.tbi")
EX1_BCF = ("vcf/ex1.bcf.gz", "vcf/ex1.bcf.gz.csi")
EX1_VCF = ("vcf/ex1.vcf.gz", "vcf/ex1.vcf.gz.csi")
FASTQ = ("fastq/ERR127302_1_subset.fastq.gz",)

# Regions checked against the local files (samtools idxstats / bcftools query): all non-empty.
# ex1.bam: seq1 1575 bp, seq2 1584 bp. range.bam/.cram: CHROMOSOME_I 1009800 bp, others 5000.
# chr22.vcf.gz: 10376 records on 22, POS 50300078..50999964. ex1.bcf/.vcf: seq1, seq2.
CE_REGIONS = ("CHROMOSOME_I:1000-2000", "CHROMOSOME_III:1-5000")


@dataclass(frozen=True)
class Case:
    tools: tuple[str, ...]
    files: tuple[str, ...]  # demo-tree paths the command reads; one folder on each side
    argv: tuple[str, ...]  # file names relative to that folder
    count: bool = False  # stdout is a count; it must be > 0 on the local originals

    @property
    def id(self) -> str:
        if self.argv[0] == "bash":  # sh(): the script, then its file arguments
            return " ".join(["bash:", self.argv[4], *self.argv[6:]])
        return " ".join(self.argv)


def samtools(*files: str, argv: str, count: bool = False) -> Case:
    return Case(("samtools",), files, ("samtools", *argv.split()), count)


def bcftools(*files: str, argv: str) -> Case:
    return Case(("bcftools",), files, ("bcftools", *argv.split()))


def tabix(*files: str, argv: str) -> Case:
    return Case(("tabix",), files, ("tabix", *argv.split()))


CASES: tuple[Case, ...] = (
    # samtools: header, whole-file and region counts, index stats, full scans, CRAM, faidx
    samtools(*EX1_BAM, argv="view -H ex1.bam"),
    samtools(*RANGE_BAM, argv="view -H range.bam"),
    samtools(*CRAM, argv="view -H -T ce.fa range.cram"),
    samtools(*EX1_BAM, argv="view -c ex1.bam", count=True),
    samtools(*RANGE_BAM, argv="view -c range.bam", count=True),
    samtools(*EX1_BAM, argv="view -c ex1.bam seq1:100-1000", count=True),
    samtools(*EX1_BAM, argv="view -c ex1.bam seq2:1400-1584", count=True),
    samtools(*EX1_BAM, argv="view ex1.bam seq1:100-1000 seq2:1-200"),
    samtools(*RANGE_BAM, argv=f"view -c range.bam {CE_REGIONS[0]}", count=True),
    samtools(*EX1_BAM, argv="idxstats ex1.bam"),
    samtools(*RANGE_BAM, argv="idxstats range.bam"),
    samtools(*EX1_BAM, argv="flagstat ex1.bam"),
    samtools(*RANGE_BAM, argv="flagstat range.bam"),
    samtools(*CRAM, argv="view -c -T ce.fa range.cram", count=True),
    samtools(*CRAM, argv=f"view -c -T ce.fa range.cram {CE_REGIONS[0]}", count=True),
    samtools(*CRAM, argv=f"view -c -T ce.fa range.cram {CE_REGIONS[1]}", count=True),
    samtools(*CRAM, argv=f"view -T ce.fa range.cram {CE_REGIONS[0]}"),
    samtools(*CRAM, argv="idxstats range.cram"),
    samtools(
        *FASTA,
        argv="faidx ce.fa CHROMOSOME_I:1-200 CHROMOSOME_I:500000-500600"
        " CHROMOSOME_I:1009601-1009800 CHROMOSOME_II:1000-1200 CHROMOSOME_MtDNA:4801-5000",
    ),
    # bcftools: region queries through a TBI (VCF.gz) and a CSI (BCF, VCF.gz); index stats
    bcftools(*CHR22, argv="view -H -r 22:50300000-50400000 chr22.vcf.gz"),
    bcftools(*CHR22, argv="view -H -r 22:50900000-51000000 chr22.vcf.gz"),
    bcftools(*EX1_BCF, argv="view -H -r seq1:100-500 ex1.bcf.gz"),
    bcftools(*EX1_BCF, argv="view -H -r seq2:1000-1584 ex1.bcf.gz"),
    bcftools(*EX1_VCF, argv="view -H -r seq1:100-500 ex1.vcf.gz"),
    bcftools(*CHR22, argv="index -s chr22.vcf.gz"),
    bcftools(*EX1_BCF, argv="index -s ex1.bcf.gz"),
    bcftools(*EX1_VCF, argv="index -s ex1.vcf.gz"),
    # tabix: contig list and region query (TBI, CSI)
    tabix(*CHR22, argv="-l chr22.vcf.gz"),
    tabix(*CHR22, argv="chr22.vcf.gz 22:50300000-50400000"),
    tabix(*EX1_VCF, argv="-l ex1.vcf.gz"),
    tabix(*EX1_VCF, argv="ex1.vcf.gz seq1:100-500"),
    # gzip streams
    Case(("zcat", "md5sum"), CHR22[:1], tuple(sh('zcat -- "$1" | md5sum', "chr22.vcf.gz"))),
    Case(
        ("zcat", "md5sum"),
        FASTQ,
        tuple(sh('zcat -- "$1" | md5sum', "ERR127302_1_subset.fastq.gz")),
    ),
    Case(("zcat", "md5sum"), EX1_VCF[:1], tuple(sh('zcat -- "$1" | md5sum', "ex1.vcf.gz"))),
    # HDF5 command-line tools (names relative: the output holds no path)
    Case(("h5ls",), ("hdf5/adata.h5ad",), ("h5ls", "-r", "adata.h5ad")),
    Case(("h5ls",), ("hdf5/toy.h5",), ("h5ls", "-r", "toy.h5")),
    Case(("h5dump",), ("hdf5/adata.h5ad",), ("h5dump", "-H", "adata.h5ad")),
    Case(("h5dump",), ("hdf5/toy.h5",), ("h5dump", "-H", "toy.h5")),
)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_tool_output(mounted: Mount, demo_tree: Path, request, case: Case) -> None:
    need(*case.tools)
    platform = _platform(request)
    local_dir, mount_dir = folders(mounted, demo_tree, platform, case.files)
    local, _ = compare(list(case.argv), local_dir, mount_dir)
    if case.count:
        assert int(local.stdout) > 0, local.show("local")
    if platform == "genestack":  # the study folder holds the same files together, too
        study = study_dir(mounted, case.files[0].split("/")[0])
        compare(list(case.argv), local_dir, study)


# --- whole files: md5sum and file(1), per data folder --------------------------------------------

DATA_FOLDERS = ("bam", "cram", "vcf", "fastq", "hdf5")


def _real_files(demo_tree: Path, folder: str) -> tuple[str, ...]:
    return tuple(
        sorted(
            f"{folder}/{p.name}"
            for p in (demo_tree / folder).iterdir()
            if p.is_file() and not p.name.endswith(SIDECAR_SUFFIX)
        )
    )


@pytest.mark.parametrize("folder", DATA_FOLDERS)
def test_md5sum_of_files(mounted: Mount, demo_tree: Path, request, folder: str) -> None:
    need("md5sum")
    rels = _real_files(demo_tree, folder)
    local_dir, mount_dir = folders(mounted, demo_tree, _platform(request), rels)
    names = [Path(rel).name for rel in rels]
    compare(["md5sum", "--", *names], local_dir, mount_dir)


@pytest.mark.parametrize("folder", DATA_FOLDERS)
def test_file_magic(mounted: Mount, demo_tree: Path, request, folder: str) -> None:
    """``file -b`` with its defaults: up to 7 MiB from the head and from the tail."""
    need("file")
    rels = _real_files(demo_tree, folder)
    local_dir, mount_dir = folders(mounted, demo_tree, _platform(request), rels)
    for name in (Path(rel).name for rel in rels):
        compare(["file", "-b", "--", name], local_dir, mount_dir)


# --- h5py: the same datasets, shapes, dtypes and values ------------------------------------------


def _h5_walk(path: Path, with_values: bool) -> dict[str, tuple]:
    import h5py

    out: dict[str, tuple] = {}

    def visit(name: str, obj) -> None:
        if isinstance(obj, h5py.Dataset):
            entry: tuple = (obj.shape, obj.dtype.str, obj.dtype.descr)
            if with_values:
                value = obj[()]
                if getattr(value, "dtype", None) is not None and not value.dtype.hasobject:
                    entry += (value.tobytes(),)
                else:
                    entry += (repr(value.tolist() if hasattr(value, "tolist") else value),)
            out[name] = entry

    with h5py.File(path, "r") as f:
        f.visititems(visit)
    return out


@pytest.mark.parametrize("rel", ["hdf5/adata.h5ad", "hdf5/toy.h5"])
def test_h5py_datasets(mounted: Mount, demo_tree: Path, request, rel: str) -> None:
    pytest.importorskip("h5py", reason="h5py is not installed in this environment")
    mount_path = locate(mounted, demo_tree, _platform(request), rel)
    local = _h5_walk(demo_tree / rel, with_values=False)
    mount = _h5_walk(mount_path, with_values=False)
    assert local, f"no datasets in local {rel}"
    assert mount == local, f"dataset list differs:\nlocal: {local}\nmount: {mount}"
    local_v = _h5_walk(demo_tree / rel, with_values=True)
    mount_v = _h5_walk(mount_path, with_values=True)
    differ = sorted(name for name in local_v if local_v[name] != mount_v.get(name))
    assert not differ, f"{rel}: values differ for datasets {differ}"


# --- ls: names, sizes and modes ------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    mode: str
    size: int
    name: str


def parse_ls(out: bytes) -> dict[str, dict[str, Entry]]:
    """``ls -l[R] --time-style=+%s`` output → {section header ("" if none): {name: entry}}."""
    sections: dict[str, dict[str, Entry]] = {}
    current = ""
    for raw in out.decode(errors="surrogateescape").split("\n"):
        if not raw or raw.startswith("total "):
            continue
        if raw.startswith(".") and raw.endswith(":"):  # "DIR:" heads each -R section
            current = raw[:-1]
            continue
        mode, _links, _owner, _group, size, _time, name = raw.split(None, 6)
        sections.setdefault(current, {})[name] = Entry(mode, int(size), name)
    return sections


LS = ["ls", "-l", "--time-style=+%s"]


@pytest.mark.parametrize("folder", [*DATA_FOLDERS, "awkward", "many"])
def test_ls_names_sizes_modes(mounted: Mount, demo_tree: Path, request, folder: str) -> None:
    need("ls")
    local = run([*LS, "--", "."], demo_tree / folder)
    assert local.rc == 0, local.show("local")
    want = {
        name: e.size
        for name, e in parse_ls(local.stdout).get("", {}).items()
        if not name.endswith(SIDECAR_SUFFIX)
    }
    assert want, local.show("local")
    for mount_dir in listing_dirs(mounted, _platform(request), folder):
        mount = run([*LS, "--", "."], mount_dir)
        both = local.show("local") + mount.show("mount")
        assert (mount.rc, mount.stderr) == (0, b""), both
        entries = parse_ls(mount.stdout).get("", {})
        got = {name: e.size for name, e in entries.items()}
        assert got == want, (
            f"names/sizes differ: missing {sorted(set(want) - set(got))}, "
            f"extra {sorted(set(got) - set(want))}\n{both}"
        )
        bad = {n: e.mode for n, e in entries.items() if e.mode != "-r--r--r--"}
        assert not bad, f"file modes are not -r--r--r--: {bad}\n{both}"
        for name in entries:
            st = os.stat(mount_dir / name)
            assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o444, (name, st)
        directory = run(["ls", "-ld", "--time-style=+%s", "--", str(mount_dir)], mounted.path)
        assert directory.rc == 0 and directory.stdout.startswith(b"dr-xr-xr-x "), directory.show(
            "mount"
        )
        st = os.stat(mount_dir)
        assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o555, st


def test_ls_lR_whole_mount(mounted: Mount, demo_tree: Path, request) -> None:
    need("ls")
    platform = _platform(request)
    mount = run(["ls", "-lR", "--time-style=+%s", "."], mounted.path)
    assert (mount.rc, mount.stderr) == (0, b""), mount.show("mount")
    sections = parse_ls(mount.stdout)
    # every file of the platform's namespace is listed, with its size and mode 0444
    problems = []
    for rel, source in mount_files(demo_tree, platform).items():
        parent, _, name = rel.rpartition("/")
        entry = sections.get(f"./{parent}" if parent else ".", {}).get(name)
        if entry is None or entry.size != source.size or entry.mode != "-r--r--r--":
            problems.append((rel, source.size, entry))
    assert not problems, f"ls -lR: missing or wrong entries {problems[:20]}\n" + mount.show("mount")
    dir_modes = {
        f"{sec}/{name}": e.mode
        for sec, entries in sections.items()
        for name, e in entries.items()
        if e.mode.startswith("d") and e.mode != "dr-xr-xr-x"
    }
    assert not dir_modes, f"directory modes are not dr-xr-xr-x: {dir_modes}"
    # the 260 files of many/ (a listing that needs several pages)
    many = {f"file-{i:04d}.txt" for i in range(MANY_COUNT)}
    if platform == "sevenbridges":
        many_sections = ["./many"]
    else:
        many_sections = ["./all", f"./studies/{study_dir(mounted, 'many').name}"]
    for sec in many_sections:
        listed = {n for n in sections.get(sec, {}) if n.startswith("file-")}
        assert listed == many, (
            f"{sec}: {len(listed)} of {MANY_COUNT} many/ files listed; "
            f"missing {sorted(many - listed)[:10]}, extra {sorted(listed - many)[:10]}"
        )


# --- awkward names -------------------------------------------------------------------------------


def _awkward_dirs(mounted: Mount, demo_tree: Path, platform: str) -> list[Path]:
    dirs = [locate(mounted, demo_tree, platform, f"awkward/{awkward_names()[0]}").parent]
    if platform == "genestack":
        dirs.append(study_dir(mounted, "awkward"))
    return dirs


def _awkward_id(name: str) -> str:
    return name.encode("ascii", "backslashreplace").decode()[:32]


@pytest.mark.parametrize("name", awkward_names(), ids=_awkward_id)
def test_awkward_name(mounted: Mount, demo_tree: Path, request, name: str) -> None:
    need("stat", "cat", "md5sum", "wc", "ls")
    platform = _platform(request)
    local_dir = demo_tree / "awkward"
    source = Source(local_dir / name)
    data = source.read()
    if name == "empty.txt":
        assert data == b"" and source.size == 0
    for mount_dir in _awkward_dirs(mounted, demo_tree, platform):
        where = f"{mount_dir}/{name!r}"
        listed = os.listdir(os.fsencode(mount_dir))
        assert name.encode() in listed, f"{where} not listed; listing has {sorted(listed)}"
        st = os.stat(mount_dir / name)
        assert stat.S_ISREG(st.st_mode) and st.st_size == source.size, (where, st)
        assert (mount_dir / name).read_bytes() == data, where
        # the same through tools: "--" and "./" keep a leading dash from being an option
        compare(["ls", "-1", "--", name], local_dir, mount_dir)
        compare(["stat", "-c", "%s %F %n", "--", name], local_dir, mount_dir)
        compare(["stat", "-c", "%s %F %n", f"./{name}"], local_dir, mount_dir)
        compare(["md5sum", "--", name], local_dir, mount_dir)
        compare(["cat", f"./{name}"], local_dir, mount_dir, output_required=bool(data))
        compare(sh('wc -c < "$1"', name), local_dir, mount_dir)
