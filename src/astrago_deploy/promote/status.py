"""`inv env.status`: the promotion path as a person reads it (the JSON is `PathState.as_json`)."""

from __future__ import annotations

from astrago_deploy.model.promotion import Commit, PathState

SHOWN = 5


def _commits(label: str, commits: list[Commit]) -> list[str]:
    if not commits:
        return []
    kinds: dict[str, int] = {}
    for commit in commits:
        kinds[commit.kind] = kinds.get(commit.kind, 0) + 1
    told = ", ".join(f"{n} {kind}" for kind, n in sorted(kinds.items()) if kind != "commit")
    lines = [f"  {label}: {len(commits)} commit(s)" + (f" ({told})" if told else "")]
    for commit in commits[-SHOWN:]:
        kind = f"[{commit.kind}] " if commit.kind != "commit" else ""
        lines.append(f"    {commit.sha[:12]} {kind}{commit.subject}")
    if len(commits) > SHOWN:
        lines.append(f"    ... and {len(commits) - SHOWN} earlier")
    return lines


def render_text(state: PathState) -> str:
    path = state.path
    source = "origin" if state.remote else "local branches"
    holds = "holds" if state.holds else "BROKEN: a later stage has commits its predecessor lacks (inv env.backport)"
    lines = [f"promotion path: {' -> '.join(path.names)} (read from {source}); containment {holds}", ""]
    previous = None
    for name, stage in state.stages.items():
        head = f"{name} ({stage.ref.removeprefix('refs/')})"
        if not stage.exists or stage.tip is None:
            lines += [f"{head}: missing; `inv env.branches` creates it", ""]
            previous = name
            continue
        lines.append(f"{head}: {stage.tip.sha[:12]} {stage.tip.date[:10]} {stage.tip.subject}")
        last = stage.last_promotion
        lines.append(f"  last promotion: {last.name} ({last.commit[:12]})" if last else "  last promotion: none")
        if previous is not None:
            lines += _commits(f"pending from {previous}", stage.pending) or [f"  pending from {previous}: none"]
            lines += _commits(f"drift (not on {previous})", stage.drift)
            lines.append(f"  contained in {previous}: {'yes' if stage.contained else 'NO'}")
        lines.append("")
        previous = name
    matrix = state.chart_matrix()
    if matrix:
        names = list(state.stages)
        width = max(len(c) for c in matrix) + 2
        columns = {n: max([len(n), *(len(v.get(n, "")) for v in matrix.values())]) + 2 for n in names}
        lines.append("  " + "chart".ljust(width) + "".join(n.ljust(columns[n]) for n in names) + "(* differs)")
        for chart, versions in matrix.items():
            differs = len(set(versions.values())) > 1
            cells = "".join((versions[n] or "-").ljust(columns[n]) for n in names)
            lines.append((("* " if differs else "  ") + chart.ljust(width) + cells).rstrip())
    return "\n".join(lines).rstrip() + "\n"
