"""How ``syncd check`` prints a report: JSON, and GitHub Actions annotations
(the text form is ``Finding.format_text``)."""

from __future__ import annotations

from syncd.findings import Finding
from syncd.rules.validate import Report


def report_json(report: Report) -> dict[str, object]:
    return {
        "findings": [
            {
                "path": f.path,
                "line": f.line,
                "severity": str(f.severity),
                "code": f.code,
                "message": f.message,
                "related": [{"path": r.path, "line": r.line} for r in f.related],
            }
            for f in report.findings
        ],
        "nodes": report.nodes,
        "subnets": report.subnets,
    }


def _escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")


def format_github(finding: Finding) -> str:
    """A GitHub Actions workflow command that annotates the file and line."""
    return (
        f"::{finding.severity} file={_escape_property(finding.path)},line={finding.line},"
        f"title={_escape_property(finding.code)}::{_escape_data(finding.message)}"
    )
