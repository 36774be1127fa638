"""Merge several class-folder image sources into one lower-case `data_merged/` with a manifest.

Files are copied, never moved; a re-run adds only files whose content (sha256) is not yet merged.
"""

from __future__ import annotations

import csv
import hashlib
import re
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from .config import IMAGE_EXTENSIONS, UserError, canonical_classes, default_data_root, output_dir
from .images import BadImageError, verify_image
from .progress import bar

MANIFEST = "manifest.csv"
MANIFEST_FIELDS = ["source", "original_path", "merged_path", "class", "sha256", "width", "height", "group"]
_SIGNER = re.compile(r"^(hand|user|signer|subject)[_-]?(\d+)", re.IGNORECASE)
_FRAME = re.compile(r"^(.*?)(\d+)$")


@dataclass
class MergeReport:
    """What a merge did: counts per (class, source), and everything it skipped with the reason."""

    merged: Counter = field(default_factory=Counter)  # (class, source) -> files copied this run
    already: int = 0  # files whose content was already merged (re-run or duplicate content)
    conflicts: list[tuple[str, str]] = field(default_factory=list)  # (path, reason): same bytes, another class
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    unknown_folders: list[str] = field(default_factory=list)
    empty_folders: list[str] = field(default_factory=list)
    manifest: Path | None = None
    dry_run: bool = False

    @property
    def n_merged(self) -> int:
        return sum(self.merged.values())


def normalize_class(name: str) -> str:
    """`A` -> `a`, ` Space ` -> `space`. Only ASCII names are folded: the Kelvin sign `\u212a` lower-cases
    to `k`, but a folder named so is not the class `k` (it stays unknown and is reported)."""
    return name.strip().lower() if name.isascii() else name


def default_sources(cwd: Path | None = None) -> list[Path]:
    """`data 1/`, `data 2/`, ... in the working directory, else every source under the data root."""
    cwd = cwd or Path.cwd()
    numbered = sorted(
        (p for p in cwd.glob("data *") if p.is_dir() and p.name[5:].strip().isdigit()),
        key=lambda p: int(p.name[5:]),
    )
    if numbered:
        return numbered
    root = default_data_root()
    if root is None:
        raise UserError("no SOURCE given and no `data 1/` folders or ../shared/datasets found; pass source folders")
    return sorted(p for p in root.iterdir() if p.is_dir())


def group_id(source: str, file_name: str, frame_block: int = 100) -> str:
    """A leakage group: the signer (`hand3_...`), else a block of consecutive frame numbers, else the file."""
    stem = Path(file_name).stem
    signer = _SIGNER.match(stem)
    if signer:
        return f"{source}:{signer.group(1).lower()}{int(signer.group(2))}"
    frame = _FRAME.match(stem)
    if frame:
        return f"{source}:{frame.group(1)}{int(frame.group(2)) // frame_block}"
    return f"{source}:{stem}"


def find_class_dirs(source: Path, classes: list[str]) -> tuple[dict[str, list[Path]], list[Path]]:
    """Map class name -> folders of that class in `source`, plus the folders that are no known class.

    A source holding a single wrapper folder (`asl_alphabet_train/asl_alphabet_train/A`) is descended.
    """
    subdirs = sorted(p for p in source.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(subdirs) == 1 and normalize_class(subdirs[0].name) not in classes:
        return find_class_dirs(subdirs[0], classes)
    known: dict[str, list[Path]] = {}
    unknown: list[Path] = []
    for d in subdirs:
        name = normalize_class(d.name)
        if name in classes:
            known.setdefault(name, []).append(d)
        else:
            unknown.append(d)
    return known, unknown


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def probe_image(path: Path) -> tuple[int, int]:
    """(width, height) of an image that decodes in full; raises ValueError with a reason otherwise."""
    return verify_image(path)


class ManifestError(UserError):
    """A manifest.csv that `merge` did not write (other columns, not text, unknown classes)."""


def read_manifest(out: Path, strict: bool = True) -> list[dict[str, str]]:
    """The rows of `out/manifest.csv` ([] when there is none).

    A file that is not one of ours raises ManifestError naming it (`strict`), or reads as no rows.
    """
    path = Path(out) / MANIFEST
    if not path.is_file():
        return []
    try:
        rows = _parse_manifest(path)
    except ManifestError:
        if strict:
            raise
        return []
    return rows


def _parse_manifest(path: Path) -> list[dict[str, str]]:
    def foreign(reason: str) -> ManifestError:
        return ManifestError(
            f"{path} is not a manifest written by `asl-tinyml merge` ({reason}); move it aside or use another folder"
        )

    try:
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            missing = [k for k in MANIFEST_FIELDS if k not in (reader.fieldnames or [])]
            if missing:
                raise foreign(f"no column(s) {', '.join(missing)}")
            rows = list(reader)
    except (UnicodeDecodeError, csv.Error, OSError) as exc:
        raise foreign(f"{type(exc).__name__}: {exc}") from exc
    known = set(canonical_classes(include_extra=True))
    for n, row in enumerate(rows, start=2):
        if any(row.get(k) is None for k in MANIFEST_FIELDS):
            raise foreign(f"line {n} has too few fields")
        merged = Path(row["merged_path"])
        if row["class"] not in known:
            raise foreign(f"line {n}: unknown class {row['class']!r}")
        if merged.is_absolute() or ".." in merged.parts or not row["width"].isdigit() or not row["height"].isdigit():
            raise foreign(f"line {n}: bad merged_path, width or height")
    return rows
def _free_name(folder: Path, name: str, taken: set[str]) -> str:
    """`1.jpg`, then `1_1.jpg`, `1_2.jpg`, ... whichever is free on disk and in this run."""
    stem, ext = Path(name).stem, Path(name).suffix.lower()
    candidate, k = f"{stem}{ext}", 0
    while candidate in taken or (folder / candidate).exists():
        k += 1
        candidate = f"{stem}_{k}{ext}"
    taken.add(candidate)
    return candidate


def _check_sources(sources: list[Path], out: Path) -> None:
    """Every source is a folder, and `out` is neither a source nor inside one (nor around one): merge
    writes into `out` and must never change a source."""
    out_abs = out.resolve()
    for s in sources:
        if not s.exists():
            raise UserError(f"source {s} does not exist; pass a folder of class folders (A/, b/, space/...)")
        if not s.is_dir():
            raise UserError(f"source {s} is not a folder; pass a folder of class folders (A/, b/, space/...)")
        src = s.resolve()
        if out_abs == src or src in out_abs.parents:
            raise UserError(f"--out {out} is inside the source {s}; merge never writes into a source: pass another --out")
        if out_abs in src.parents:
            raise UserError(f"the source {s} is inside --out {out}; merge never writes into a source: pass another --out")


def merge(
    sources: list[Path],
    out: Path,
    *,
    include_extra: bool = False,
    dry_run: bool = False,
    limit_per_class: int | None = None,
    frame_block: int = 100,
) -> MergeReport:
    """Copy every image of every known class folder of `sources` into `out/<class>/`, with a manifest.

    Raises UserError when nothing at all could be merged for a reason the user must fix.
    """
    sources = [Path(s) for s in sources]
    out = Path(out)
    if limit_per_class is not None and limit_per_class < 1:
        raise UserError(f"--limit-per-class must be at least 1, got {limit_per_class}")
    _check_sources(sources, out)
    output_dir(out, "--out", create=False)
    classes = canonical_classes(include_extra)
    rows = read_manifest(out)
    known_hashes = {r["sha256"]: r for r in rows}
    report = MergeReport(dry_run=dry_run, manifest=out / MANIFEST)

    plan: list[tuple[str, str, Path]] = []  # (class, source name, file)
    n_class_dirs = 0
    for source in sources:
        class_dirs, unknown = find_class_dirs(source, classes)
        report.unknown_folders += [str(u) for u in unknown]
        n_class_dirs += len(class_dirs)
        for cls, dirs in class_dirs.items():
            files = sorted(f for d in dirs for f in d.iterdir() if f.is_file() and not f.name.startswith("."))
            if not files:
                report.empty_folders += [str(d) for d in dirs]
                continue
            if limit_per_class is not None and len(files) > limit_per_class:  # evenly spaced: many groups
                step = len(files) / limit_per_class
                files = [files[int(k * step)] for k in range(limit_per_class)]
            plan += [(cls, source.name, f) for f in files]
    if n_class_dirs == 0:
        raise UserError(
            f"no class folders found in {', '.join(map(str, sources))}; expected folders named {classes[0]}..{classes[-1]}"
        )

    new_rows: list[dict[str, str]] = []
    taken: dict[str, set[str]] = {}
    if not dry_run:
        output_dir(out, "--out")
    try:
        for cls, source_name, f in bar(plan, desc="merge", unit="img", leave=False):
            if f.suffix.lower() not in IMAGE_EXTENSIONS:
                report.skipped.append((str(f), f"not an image extension ({f.suffix or 'none'})"))
                continue
            try:
                width, height = probe_image(f)
            except BadImageError as exc:
                report.skipped.append((str(f), str(exc)))
                continue
            digest = file_sha256(f)
            if digest in known_hashes:
                first = known_hashes[digest]
                if first["class"] != cls:
                    reason = (f"class {cls}, same bytes as {first['merged_path']} (class {first['class']}); "
                              f"kept as {first['class']} only: check which label is right")
                    report.conflicts.append((str(f), reason))
                else:
                    report.already += 1
                continue
            dest_dir = out / cls
            name = _free_name(dest_dir, f.name, taken.setdefault(cls, set()))
            if not dry_run:
                dest_dir.mkdir(parents=True, exist_ok=True)
                shutil.copy2(f, dest_dir / name)
            report.merged[(cls, source_name)] += 1
            row = {
                "source": source_name,
                "original_path": str(f.resolve()),
                "merged_path": f"{cls}/{name}",
                "class": cls,
                "sha256": digest,
                "width": str(width),
                "height": str(height),
                "group": group_id(source_name, f.name, frame_block),
            }
            known_hashes[digest] = row
            new_rows.append(row)
    finally:  # every copied file gets its manifest row, even when the run stops half-way
        if new_rows and not dry_run:
            _append_manifest(out, new_rows)
    if report.n_merged == 0 and report.already == 0 and not report.conflicts:
        reasons = "; ".join(f"{p}: {r}" for p, r in report.skipped[:3]) or "no image files in the class folders"
        raise UserError(f"nothing could be merged ({reasons})")
    return report


def _append_manifest(out: Path, rows: list[dict[str, str]]) -> None:
    path = out / MANIFEST
    path.parent.mkdir(parents=True, exist_ok=True)
    new_file = not path.exists()
    with path.open("a", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=MANIFEST_FIELDS)
        if new_file:
            writer.writeheader()
        writer.writerows(rows)


def format_report(report: MergeReport, out: Path) -> str:
    """A per-class x per-source count table of what this run merged, then what it skipped and why."""
    verb = "would merge" if report.dry_run else "merged"
    lines = [f"{verb} {report.n_merged} new file(s) into {out} ({report.already} already there or duplicate content)"]
    if report.merged:
        srcs = sorted({s for _, s in report.merged})
        classes = [c for c in canonical_classes(True) if any(c == k for k, _ in report.merged)]
        width = max(8, *(len(s) for s in srcs))
        lines.append("class  " + " ".join(s.rjust(width) for s in srcs) + "total".rjust(width + 1))
        for c in classes:
            counts = [report.merged[(c, s)] for s in srcs]
            lines.append(f"{c:<6} " + " ".join(str(n).rjust(width) for n in counts) + str(sum(counts)).rjust(width + 1))
        totals = [sum(report.merged[(c, s)] for c in classes) for s in srcs]
        lines.append("total  " + " ".join(str(n).rjust(width) for n in totals) + str(sum(totals)).rjust(width + 1))
    for path, reason in report.skipped:
        lines.append(f"skipped {path}: {reason}")
    for path, reason in report.conflicts:
        lines.append(f"label conflict {path}: {reason}")
    for folder in report.unknown_folders:
        name = Path(folder).name
        why = (f"a non-ASCII name (looks like {name.lower()!r}); rename it to an ASCII class name"
               if not name.isascii() else "use --include-extra for del/nothing")
        lines.append(f"unknown class folder {folder}: not merged ({why})")
    for folder in report.empty_folders:
        lines.append(f"empty class folder {folder}: skipped")
    if report.skipped or report.conflicts or report.unknown_folders or report.empty_folders:
        lines.append(
            f"{len(report.skipped)} file(s) skipped, {len(report.conflicts)} label conflict(s), "
            f"{len(report.unknown_folders)} unknown folder(s), {len(report.empty_folders)} empty folder(s)"
        )
    return "\n".join(lines)
