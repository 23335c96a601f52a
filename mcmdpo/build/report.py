"""``OUT/build_report.json``: one section per stage, in pipeline order, each written (atomically)
when its stage starts and again when it ends; a stage that is redone drops the sections of the
stages after it, whose files it makes stale. Also the one-line summaries the command prints."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any, Iterable

from mcmdpo.build.options import STAGES
from mcmdpo.files import write_text_atomically

REPORT_NAME = "build_report.json"


def report_path(output_dir: str | Path) -> Path:
    return Path(output_dir) / REPORT_NAME


def read_report(output_dir: str | Path) -> dict[str, Any]:
    path = report_path(output_dir)
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return report if isinstance(report, dict) else {}


def write_section(output_dir: str | Path, stage: str, section: dict[str, Any], redone: bool = False) -> dict[str, Any]:
    """Set ``stage``'s section (``redone``: drop the later stages' sections) and return the report."""
    report = read_report(output_dir)
    report[stage] = section
    if redone:
        for later in STAGES[STAGES.index(stage) + 1:]:
            report.pop(later, None)
    ordered = {name: report[name] for name in STAGES if name in report}
    write_text_atomically(report_path(output_dir), json.dumps(ordered, indent=1, ensure_ascii=False) + "\n")
    return ordered


def grouped(entries: Iterable[tuple[str, Any, str | None]]) -> dict[str, dict[str, Any]]:
    """(reason, record id, detail) entries as {reason: {"count": n, "records": [{"id", "detail"}]}},
    reasons in order of first appearance."""
    groups: dict[str, dict[str, Any]] = {}
    for reason, record_id, detail in entries:
        group = groups.setdefault(reason, {"count": 0, "records": []})
        group["count"] += 1
        group["records"].append({"id": record_id, **({"detail": detail} if detail else {})})
    return groups


def counts_line(groups: dict[str, dict[str, Any]]) -> str:
    return ", ".join(f"{reason} {group['count']}" for reason, group in groups.items())


def summary_line(stage: str, section: dict[str, Any]) -> str:
    """What the command prints when a stage ends."""
    status = "up to date" if section.get("up_to_date") else "done"
    if stage == "collect":
        dropped = section["dropped"]
        text = f"{section['records']} records, {section['kept']} kept, {section['dropped_count']} dropped"
        return f"collect ({status}): {text}" + (f" ({counts_line(dropped)})" if dropped else "")
    if stage == "correct":
        kept = section["kept_original"]
        return (f"correct ({status}): {section['records']} records, {section['corrected']} corrected, {section['unchanged']} "
                f"unchanged, {section['kept_original_count']} kept their original"
                + (f" ({counts_line(kept)})" if kept else ""))
    if stage == "sample":
        return f"sample ({status}): {section['records']} records x {section['num_candidates']} candidates"
    if stage == "rank":
        extra = "".join(f", {key.replace('_', ' ')} {value}" for key, value in section.get("counts", {}).items())
        return f"rank ({status}): {section['records']} records ranked by {section['ranker']}{extra}"
    skipped = section["skipped"]
    return (f"pair ({status}): {section['pairs']} pairs of {section['records']} records in {section['pairs_file']}"
            + (f", skipped: {counts_line(skipped)}" if skipped else ""))


def tally(values: Iterable[str]) -> dict[str, int]:
    return dict(Counter(values))
