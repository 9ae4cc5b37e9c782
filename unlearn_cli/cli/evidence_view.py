"""How the per-example evidence and `auto`'s attempts are shown (forget, eval, demo)."""

from __future__ import annotations

from rich import box
from rich.table import Table

UNSEEN_NOTE = (
    "Accuracy and the feature attack are averages: they cannot see a memorized sample "
    "(a mislabeled or poisoned one is gotten wrong often enough already). {why}"
)


def flagged(summary: dict) -> str:
    low, high = summary["interval"]
    return (
        f"{summary['flagged']} of {summary['of']} ({100 * summary['share']:.1f}%, "
        f"{100 * low:.1f}–{100 * high:.1f}%)"
    )


def verdict_text(summary: dict) -> str:
    return "within chance" if summary["within_band"] else "FLAGGED beyond chance"


def chance_text(evidence: dict) -> str:
    high = 100 * evidence["band"][1]
    return (
        f"chance flags up to {high:.1f}% of never-seen samples at α {evidence['alpha']:g} "
        f"({evidence['shadows']} shadows, {evidence['heldout']:,} held-out samples)"
    )


def evidence_rows(evidence: dict) -> list[tuple[str, str]]:
    """Rows of the forget table: before and after, or why there is no evidence."""
    if not evidence["verified"]:
        return [("evidence", f"unverified: {evidence['why']}")]
    rows = [
        ("flagged before", flagged(evidence["before"])),
        ("flagged after", f"{flagged(evidence['after'])}: {verdict_text(evidence['after'])}"),
        ("evidence", chance_text(evidence)),
    ]
    if evidence.get("note"):
        rows.append(("note", evidence["note"]))
    return rows


def evidence_table(evidence: dict) -> Table:
    """eval's headline: per model, the share of the forget set still flagged as members."""
    table = Table(
        title="per-example evidence: forget samples that still look like training members",
        title_justify="left",
    )
    for col in ("model", "flagged", "share %", "95% interval %", "verdict"):
        table.add_column(col, justify="left" if col in ("model", "verdict") else "right")
    names = {"parent": "parent (before)", "version": "unlearned", "reference": "reference"}
    for key in ("parent", "version", "reference"):
        summary = evidence["models"].get(key)
        if summary is None:
            continue
        low, high = summary["interval"]
        label = names[key] + (f" {summary['version']:04d}" if key == "parent" else "")
        table.add_row(
            label,
            f"{summary['flagged']} of {summary['of']}",
            f"{100 * summary['share']:.1f}",
            f"{100 * low:.1f}–{100 * high:.1f}",
            verdict_text(summary),
        )
    table.caption = chance_text(evidence) + (f"; {evidence['note']}" if evidence["note"] else "")
    return table


def attempts_table(auto: dict | None) -> Table | None:
    """auto's attempts, when it tried more than one method."""
    attempts = (auto or {}).get("attempts") or []
    if len(attempts) < 2:
        return None
    table = Table(title="auto's attempts", title_justify="left", box=box.SIMPLE)
    for col in ("method", "seconds", "flagged %", "result"):
        table.add_column(col, justify="right" if col in ("seconds", "flagged %") else "left")
    for a in attempts:
        if "skipped" in a:
            table.add_row(a["method"], "", "", f"skipped: {a['skipped']}")
            continue
        share = a["flagged_share"]
        table.add_row(
            a["method"],
            f"{a['seconds']:.2f}",
            "" if share is None else f"{100 * share:.1f}",
            ("kept: " if a["accepted"] else "") + a["why"],
        )
    return table
