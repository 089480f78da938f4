#!/usr/bin/env python3
"""Writes alerts.azure.json: the rules of alerts.yaml in the shape of Azure Monitor
Prometheus rule groups (Microsoft.AlertsManagement/prometheusRuleGroups, API 2023-03-01),
which ../aca/modules/prometheus-monitoring.bicep loads with loadJsonContent.

alerts.yaml stays the one source: expressions, labels and annotations are copied unchanged;
only what Azure spells differently is converted: `for` and the group interval become ISO 8601
durations (10m -> PT10M), the severity label also becomes Azure's number (0 critical ..
4 verbose). The action groups are added by the Bicep at deployment.

    python3 deploy/monitoring/render_azure_rules.py          # rewrite alerts.azure.json
    python3 deploy/monitoring/render_azure_rules.py --check  # exit 1 when it is out of date

Needs PyYAML (tests/deploy/requirements.txt).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "alerts.yaml"
TARGET = HERE / "alerts.azure.json"

# The severity label of alerts.yaml -> Azure Monitor alert severity (Sev0 .. Sev4).
SEVERITY = {"critical": 0, "error": 1, "warning": 2, "info": 3, "verbose": 4}

# How long a rule must evaluate healthy before Azure resolves its alert (1 to 15 minutes).
TIME_TO_RESOLVE = "PT10M"

PROMETHEUS_DURATION = re.compile(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")


def iso8601(duration: str) -> str:
    """A Prometheus duration of hours, minutes and seconds (90s, 1h30m) as ISO 8601."""
    m = PROMETHEUS_DURATION.fullmatch(duration)
    if not duration or not m:
        raise ValueError(f"duration {duration!r}: only h, m and s are converted")
    total = sum(int(n or 0) * unit for n, unit in zip(m.groups(), (3600, 60, 1)))
    hours, rest = divmod(total, 3600)
    minutes, seconds = divmod(rest, 60)
    parts = [f"{n}{u}" for n, u in ((hours, "H"), (minutes, "M"), (seconds, "S")) if n]
    return "PT" + ("".join(parts) or "0S")


def azure_rule(rule: dict) -> dict:
    if "alert" not in rule:
        raise ValueError(f"only alerting rules are rendered, not {rule.get('record')!r}")
    out = {"alert": rule["alert"], "expression": rule["expr"]}
    if "for" in rule:
        out["for"] = iso8601(rule["for"])
    labels = rule.get("labels", {})
    out["severity"] = SEVERITY[labels["severity"]]
    out["labels"] = labels
    out["annotations"] = rule.get("annotations", {})
    out["enabled"] = True
    out["resolveConfiguration"] = {"autoResolved": True, "timeToResolve": TIME_TO_RESOLVE}
    return out


def render(alerts: dict) -> dict:
    """alerts.yaml, parsed -> alerts.azure.json, parsed."""
    return {
        "groups": [
            {
                "name": group["name"],
                "interval": iso8601(group.get("interval", "1m")),
                "rules": [azure_rule(rule) for rule in group["rules"]],
            }
            for group in alerts["groups"]
        ]
    }


def rendered_text() -> str:
    return json.dumps(render(yaml.safe_load(SOURCE.read_text())), indent=2) + "\n"


def main(argv: list[str]) -> int:
    text = rendered_text()
    if argv[1:] == ["--check"]:
        if TARGET.read_text() != text:
            print(f"{TARGET.name} is out of date: run {Path(argv[0]).name}", file=sys.stderr)
            return 1
        return 0
    if argv[1:]:
        print(__doc__, file=sys.stderr)
        return 2
    TARGET.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
