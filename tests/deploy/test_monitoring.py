"""keyward's dashboards and alerts (deploy/monitoring) and their wiring: the Grafana dashboard
and the Azure Monitor workbook parse and every chart has a query; every PromQL expression
(dashboard, workbook, alerts.yaml, the Azure rule groups, the PrometheusRule) parses with
promtool and reads only metrics keyward emits, with labels those metrics carry; promtool checks
the rules and runs their unit tests; the Azure and prometheus-operator copies of the rules are
alerts.yaml's; the Bicep loads them and deploys only when asked.

"Emits" is read from keyward's source (proxy/src/**/metrics*.rs, tests left out), so a metric
renamed there fails here; METRICS below is the same list written out, with each metric's labels."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from manifests import ACA, DEPLOY, K8S, ROOT, load_yaml_docs, one
from render import kustomize_command, render_builtin, render_variant, render_with_tool
from test_bicep import block_after, module_call, module_params

MONITORING = DEPLOY / "monitoring"
ALERTS = MONITORING / "alerts.yaml"
ALERTS_TEST = MONITORING / "alerts_test.yaml"
AZURE_RULES = MONITORING / "alerts.azure.json"
DASHBOARD = MONITORING / "grafana-dashboard.json"
WORKBOOK = MONITORING / "workbook.json"
BICEP_MODULE = ACA / "modules/prometheus-monitoring.bicep"
RULES_COMPONENT = K8S / "components/prometheus-rules"
WORKSPACE_PLACEHOLDER = "{{AZURE_MONITOR_WORKSPACE_ID}}"

# --------------------------------------------------------------------------------------------
# What keyward emits: names as Prometheus (and an OTel collector, and Azure Monitor managed
# Prometheus) store them, and each metric's labels.
# --------------------------------------------------------------------------------------------

HTTP_SERVER = {"keyward_listener", "http_request_method", "http_response_status_code", "keyward_client", "http_route"}
HTTP_CLIENT = {"keyward_listener", "http_request_method", "http_response_status_code", "error_type", "http_route"}
METRICS: dict[str, tuple[str, set[str]]] = {
    "http_server_request_duration_seconds": ("histogram", HTTP_SERVER),
    "http_client_request_duration_seconds": ("histogram", HTTP_CLIENT),
    "keyward_upstream_errors_total": ("counter", {"listener", "kind"}),
    "keyward_auth_failures_total": ("counter", {"reason"}),
    "keyward_mcp_denials_total": ("counter", {"client", "kind", "name"}),
    "keyward_secret_leaks_blocked_total": ("counter", {"listener", "secret"}),
    "keyward_secret_refreshes_total": ("counter", {"result"}),
    "keyward_secrets_referenced": ("gauge", set()),
    "keyward_secrets_missing": ("gauge", set()),
    "keyward_secret_snapshot_age_seconds": ("gauge", set()),
    "keyward_secret_expiry_seconds": ("gauge", {"secret"}),
}
# Added by whatever scrapes keyward (Prometheus, the collector, ama-metrics).
SCRAPE_LABELS = {"job", "instance"}
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
# The semantic-convention names generic HTTP servers share: a query must pin them to keyward.
SHARED_NAMES = {"http_server_request_duration_seconds", "http_client_request_duration_seconds"}

LISTENERS = {"ingress", "egress"}


def denial_reasons() -> set[str]:
    """The reason labels of keyward_auth_failures_total: what Denial::reason() and
    TokenDenial::reason() return (proxy/src/auth)."""
    reasons = set()
    for path in (ROOT / "proxy/src/auth/mod.rs", ROOT / "proxy/src/auth/token/mod.rs"):
        text = path.read_text()
        for m in re.finditer(r"fn reason\(self\)[^{]*", text):
            reasons |= set(re.findall(r'=>\s*"([a-z_]+)"', rust_block(text, m.end())))
    return reasons


# Label values a query may compare with (=, !=), where keyward's set of values is fixed.
def known_values() -> dict[tuple[str, str], set[str]]:
    return {
        ("http_server_request_duration_seconds", "keyward_listener"): LISTENERS,
        ("http_client_request_duration_seconds", "keyward_listener"): LISTENERS,
        ("http_client_request_duration_seconds", "error_type"): {"timeout", "unavailable", "_OTHER"},
        ("keyward_upstream_errors_total", "listener"): LISTENERS,
        ("keyward_upstream_errors_total", "kind"): {"timeout", "unavailable"},
        ("keyward_secret_leaks_blocked_total", "listener"): LISTENERS,
        ("keyward_secret_refreshes_total", "result"): {"success", "failure"},
        ("keyward_auth_failures_total", "reason"): denial_reasons(),
    }


# --------------------------------------------------------------------------------------------
# keyward's source
# --------------------------------------------------------------------------------------------


def metrics_sources() -> list[Path]:
    src = ROOT / "proxy/src"
    return sorted({*src.glob("**/metrics*.rs"), *src.glob("**/metrics/**/*.rs")})


def rust_block(text: str, start: int) -> str:
    """The {...} block opening at or after `start` (no braces in the strings it holds)."""
    open_at = text.index("{", start)
    depth = 0
    for i in range(open_at, len(text)):
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        if depth == 0:
            return text[open_at:i + 1]
    raise AssertionError("unbalanced braces")


def rust_string_literals(text: str) -> list[str]:
    """String literals of Rust code, comments and char literals skipped."""
    out, i, n = [], 0, len(text)
    char = re.compile(r"'(?:[^'\\\n]|\\.[^']*)'")
    raw = re.compile(r'r(#*)"')
    while i < n:
        if text.startswith("//", i):
            end = text.find("\n", i)
            i = n if end < 0 else end
        elif text.startswith("/*", i):
            i = text.index("*/", i) + 2
        elif (m := raw.match(text, i)) and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")):
            end = text.index('"' + m.group(1), m.end())
            out.append(text[m.end():end])
            i = end + 1 + len(m.group(1))
        elif text[i] == '"':
            j = i + 1
            while text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append(text[i + 1:j])
            i = j + 1
        elif text[i] == "'":
            m = char.match(text, i)
            i = m.end() if m else i + 1  # a char literal, or a lifetime's quote
        else:
            i += 1
    return out


def emitted_words() -> set[str]:
    """Every name-like word in a string literal of keyward's metrics code (its tests left out),
    dots as underscores: `keyward_auth_failures_total{{reason=..}}` gives the metric and its
    label, an OTel instrument `http.server.request.duration` gives http_server_request_duration."""
    words = set()
    for path in metrics_sources():
        text = path.read_text()
        text = text[:text.find("#[cfg(test)]")] if "#[cfg(test)]" in text else text
        for literal in rust_string_literals(text):
            words |= {w.replace(".", "_") for w in re.findall(r"[A-Za-z_][A-Za-z0-9_.]*", literal)}
    return words


# An instrument's name in the source, and what exporters append to it for Prometheus.
EXPORTER_SUFFIXES = ("", "_total", "_seconds", "_seconds_total")


def is_emitted(name: str, words: set[str]) -> bool:
    return any(name.endswith(s) and name[:len(name) - len(s)] in words for s in EXPORTER_SUFFIXES)


def default_refresh_interval() -> int:
    text = (ROOT / "proxy/src/config/secrets.rs").read_text()
    m = re.search(r"fn refresh_interval\(\) -> Duration \{\s*Duration::from_secs\((\d+)\)", text)
    assert m, "proxy/src/config/secrets.rs: no default refresh_interval found"
    return int(m.group(1))


# --------------------------------------------------------------------------------------------
# A PromQL reader: enough of the grammar for these queries, to know which metric each selector
# reads and which labels each step has. promtool (the real parser) checks the syntax.
# --------------------------------------------------------------------------------------------

TOKEN = re.compile(r"""
    (?P<ws>\s+|\#[^\n]*)
  | (?P<str>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
  | (?P<dur>(?:\d+(?:ms|[smhdwy]))+(?![\w.]))
  | (?P<num>0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
  | (?P<ident>[a-zA-Z_:][a-zA-Z0-9_:]*)
  | (?P<op>==|!=|>=|<=|=~|!~|[-+*/%^<>=(){}\[\],:@])
""", re.X)
AGGREGATIONS = {"sum", "avg", "min", "max", "count", "group", "stddev", "stdvar", "topk", "bottomk",
                "quantile", "count_values"}
FUNCTIONS = {"rate", "irate", "increase", "delta", "idelta", "deriv", "changes", "resets",
             "histogram_quantile", "label_replace", "label_join", "abs", "ceil", "floor", "round",
             "clamp", "clamp_min", "clamp_max", "sgn", "exp", "ln", "log2", "log10", "sqrt",
             "time", "timestamp", "vector", "scalar", "absent", "absent_over_time", "sort",
             "sort_desc", "avg_over_time", "min_over_time", "max_over_time", "sum_over_time",
             "count_over_time", "last_over_time", "quantile_over_time", "present_over_time"}
BINARY = {"or": 1, "and": 2, "unless": 2, "==": 3, "!=": 3, "<": 3, ">": 3, "<=": 3, ">=": 3,
          "+": 4, "-": 4, "*": 5, "/": 5, "%": 5, "atan2": 5, "^": 6}


@dataclass
class Node:
    kind: str  # num, str, sel, call, agg, bin, neg
    name: str = ""  # metric, function or operator
    args: list = field(default_factory=list)
    matchers: list = field(default_factory=list)  # sel: (label, op, value)
    grouping: tuple | None = None  # agg: ("by"|"without", labels); bin: ("on"|"ignoring", labels)


def tokenize(text: str) -> list[tuple[str, str]]:
    out, i = [], 0
    while i < len(text):
        m = TOKEN.match(text, i)
        if not m:
            raise SyntaxError(f"unexpected {text[i:i + 20]!r}")
        if m.lastgroup != "ws":
            out.append((m.lastgroup, m.group()))
        i = m.end()
    return out


class PromQL:
    def __init__(self, text: str):
        self.toks, self.i = tokenize(text), 0

    def peek(self, k: int = 0) -> tuple[str, str]:
        return self.toks[self.i + k] if self.i + k < len(self.toks) else ("end", "")

    def take(self, value: str | None = None) -> str:
        kind, tok = self.peek()
        if kind == "end" or (value is not None and tok != value):
            raise SyntaxError(f"expected {value or 'more'}, got {tok or 'the end'}")
        self.i += 1
        return tok

    def parse(self) -> Node:
        node = self.expr(0)
        if self.peek()[0] != "end":
            raise SyntaxError(f"unexpected {self.peek()[1]}")
        return node

    def expr(self, min_prec: int) -> Node:
        lhs = self.unary()
        while True:
            kind, tok = self.peek()
            prec = BINARY.get(tok) if kind in ("op", "ident") else None
            if prec is None or prec < min_prec:
                return lhs
            self.take()
            grouping = None
            if self.peek()[1] == "bool":
                self.take()
            if self.peek()[1] in ("on", "ignoring"):
                grouping = (self.take(), self.labels())
            if self.peek()[1] in ("group_left", "group_right"):
                self.take()
                if self.peek()[1] == "(":
                    self.labels()
            rhs = self.expr(prec if tok == "^" else prec + 1)
            lhs = Node("bin", tok, [lhs, rhs], grouping=grouping)

    def unary(self) -> Node:
        if self.peek()[1] in ("-", "+"):
            sign = self.take()
            inner = self.unary()
            return Node("neg", args=[inner]) if sign == "-" else inner
        node = self.primary()
        while True:
            if self.peek()[1] == "[":
                self.take()
                self.take()  # a duration
                if self.peek()[1] == ":":
                    self.take()
                    if self.peek()[1] != "]":
                        self.take()
                self.take("]")
            elif self.peek()[1] == "offset":
                self.take()
                if self.peek()[1] == "-":
                    self.take()
                self.take()
            elif self.peek()[1] == "@":
                self.take()
                self.take()
                if self.peek()[1] == "(":
                    self.take()
                    self.take(")")
            else:
                return node

    def labels(self) -> list[str]:
        self.take("(")
        out = []
        while self.peek()[1] != ")":
            out.append(self.take())
            if self.peek()[1] == ",":
                self.take()
        self.take(")")
        return out

    def primary(self) -> Node:
        kind, tok = self.peek()
        if kind == "num" or tok in ("inf", "nan", "Inf", "NaN"):
            self.take()
            return Node("num", tok)
        if kind == "str":
            self.take()
            return Node("str", unquote(tok))
        if tok == "(":
            self.take()
            node = self.expr(0)
            self.take(")")
            return node
        if tok == "{":
            return self.selector("")
        if kind != "ident":
            raise SyntaxError(f"unexpected {tok or 'end'}")
        self.take()
        if tok in AGGREGATIONS and self.peek()[1] in ("(", "by", "without"):
            grouping = (self.take(), self.labels()) if self.peek()[1] in ("by", "without") else None
            args = self.args()
            if grouping is None and self.peek()[1] in ("by", "without"):
                grouping = (self.take(), self.labels())
            return Node("agg", tok, args, grouping=grouping)
        if self.peek()[1] == "(":
            if tok not in FUNCTIONS:
                raise SyntaxError(f"unknown function {tok}")
            return Node("call", tok, self.args())
        return self.selector(tok)

    def args(self) -> list[Node]:
        self.take("(")
        out = []
        while self.peek()[1] != ")":
            out.append(self.expr(0))
            if self.peek()[1] == ",":
                self.take()
        self.take(")")
        return out

    def selector(self, name: str) -> Node:
        node = Node("sel", name)
        if self.peek()[1] == "{":
            self.take()
            while self.peek()[1] != "}":
                label = self.take()
                op = self.take()
                node.matchers.append((label, op, unquote(self.take())))
                if self.peek()[1] == ",":
                    self.take()
            self.take("}")
        return node


def unquote(tok: str) -> str:
    """A PromQL string's value (these queries use no escapes but \\" and \\\\)."""
    if tok[0] == "`":
        return tok[1:-1]
    return re.sub(r"\\(.)", r"\1", tok[1:-1])


def family(name: str) -> tuple[str, str]:
    """(metric, suffix): http_server_request_duration_seconds_bucket -> (..._seconds, _bucket)."""
    if name in METRICS:
        return name, ""
    for suffix in HISTOGRAM_SUFFIXES:
        base = name[:-len(suffix)]
        if name.endswith(suffix) and METRICS.get(base, ("",))[0] == "histogram":
            return base, suffix
    return name, ""


class Checker:
    """Walks a parsed query: the labels each step yields, and what is wrong with it."""

    def __init__(self):
        self.errors: list[str] = []
        self.metrics: set[str] = set()
        self.values = known_values()

    def labels(self, node: Node) -> set[str] | None:
        """The labels of the series `node` yields; None for a scalar or string."""
        if node.kind in ("num", "str"):
            return None
        if node.kind == "neg":
            return self.labels(node.args[0])
        if node.kind == "sel":
            return self.selector(node)
        if node.kind == "call":
            return self.call(node)
        if node.kind == "agg":
            return self.aggregation(node)
        return self.binary(node)

    def selector(self, node: Node) -> set[str]:
        metric, suffix = family(node.name)
        if metric not in METRICS:
            self.errors.append(f"{node.name or 'a selector without a name'}: not a metric keyward emits")
            return set()
        self.metrics.add(metric)
        have = METRICS[metric][1] | SCRAPE_LABELS | ({"le"} if suffix == "_bucket" else set())
        for label, op, value in node.matchers:
            if label not in have:
                self.errors.append(f"{node.name} has no label {label}")
            allowed = self.values.get((metric, label))
            if allowed and op in ("=", "!=") and value not in allowed:
                self.errors.append(f"{node.name}{{{label}{op}{value!r}}}: {label} is one of {sorted(allowed)}")
            if allowed and op in ("=~", "!~") and not any(re.fullmatch(value, v) for v in allowed):
                self.errors.append(f"{node.name}{{{label}{op}{value!r}}} matches none of {sorted(allowed)}")
            if label == "http_response_status_code" and not any(re.fullmatch(value, str(c)) for c in range(100, 600)):
                self.errors.append(f"{node.name}: {value!r} matches no status code")
        if metric in SHARED_NAMES and "keyward_listener" not in {m[0] for m in node.matchers}:
            self.errors.append(f"{node.name} without a keyward_listener matcher reads other servers' metrics too")
        return have

    def call(self, node: Node) -> set[str] | None:
        vectors = [(i, self.labels(a)) for i, a in enumerate(node.args)]
        inputs = [ls for _, ls in vectors if ls is not None]
        if node.name in ("time", "scalar", "vector"):
            return set() if node.name == "vector" else None
        if node.name == "absent":
            return set()
        if node.name == "histogram_quantile":
            if "le" not in (vectors[1][1] or set()):
                self.errors.append("histogram_quantile over series without le")
            return (vectors[1][1] or set()) - {"le"}
        if node.name == "label_replace":
            source = node.args[3].name
            if source and source not in (inputs[0] if inputs else set()):
                self.errors.append(f"label_replace reads {source}, which its input does not have")
            return (inputs[0] if inputs else set()) | {node.args[1].name}
        return inputs[0] if inputs else set()

    def aggregation(self, node: Node) -> set[str]:
        inputs = [ls for ls in map(self.labels, node.args) if ls is not None]
        have = inputs[-1] if inputs else set()
        if node.name in ("topk", "bottomk"):
            return have
        if node.grouping is None:
            return set()
        mode, labels = node.grouping
        for label in labels:
            if label not in have:
                self.errors.append(f"{node.name} {mode} ({label}): its input has no {label}")
        return set(labels) if mode == "by" else have - set(labels)

    def binary(self, node: Node) -> set[str] | None:
        lhs, rhs = (self.labels(a) for a in node.args)
        if node.grouping:
            mode, labels = node.grouping
            for label in labels:
                if label not in (lhs or set()) or label not in (rhs or set()):
                    self.errors.append(f"{mode} ({label}): a side has no {label}")
            if mode == "on":
                return set(labels)
        if lhs is None:
            return rhs
        if node.name == "or" and rhs is not None:
            return lhs | rhs
        return lhs


@dataclass
class Query:
    where: str
    expr: str
    template_labels: set[str]  # labels a legend or an annotation prints
    variables: bool = False  # Grafana: $variables inside strings


GRAFANA_INTERVALS = re.compile(r"\$__(rate_interval|interval|range)|\$\{__(rate_interval|interval|range)\}")
GRAFANA_VARIABLE = re.compile(r"\$\{?[A-Za-z_]\w*\}?")


def promql_of(q: Query) -> str:
    """The query as Prometheus receives it: Grafana's intervals and variables filled in."""
    if not q.variables:
        return q.expr
    text = GRAFANA_INTERVALS.sub("5m", q.expr)
    return GRAFANA_VARIABLE.sub(".*", text)


def check_query(q: Query) -> list[str]:
    checker = Checker()
    try:
        out = checker.labels(PromQL(promql_of(q)).parse())
    except SyntaxError as err:
        return [f"does not parse: {err}"]
    for label in q.template_labels - (out or set()):
        checker.errors.append(f"prints {{{{{label}}}}}, which the result does not have ({sorted(out or [])})")
    if q.variables:
        for m in re.finditer(r'(\w+)\s*(=|!=|=~|!~)\s*"([^"]*\$[^"]*)"', q.expr):
            if m.group(2) not in ("=~", "!~"):
                checker.errors.append(f"{m.group(1)}{m.group(2)}{m.group(3)!r}: a multi-value variable needs =~")
    return checker.errors


# --------------------------------------------------------------------------------------------
# The files
# --------------------------------------------------------------------------------------------


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def workbook() -> dict:
    return json.loads(WORKBOOK.read_text())


def alerts() -> dict:
    return yaml.safe_load(ALERTS.read_text())


def grafana_panels(panels: list[dict] | None = None) -> list[dict]:
    out = []
    for p in dashboard()["panels"] if panels is None else panels:
        out += grafana_panels(p.get("panels", [])) if p["type"] == "row" else [p]
    return out


def workbook_items(items: list[dict] | None = None) -> list[dict]:
    out = []
    for item in workbook()["items"] if items is None else items:
        out.append(item)
        if item["type"] == 12:
            out += workbook_items(item["content"]["items"])
    return out


def legend_labels(text: str) -> set[str]:
    return set(re.findall(r"\{\{\s*(\w+)\s*\}\}", text or ""))


def annotation_labels(rule: dict) -> set[str]:
    texts = [*rule.get("annotations", {}).values(), *rule.get("labels", {}).values()]
    return {label for t in texts for label in re.findall(r"\$labels\.(\w+)", t)}


def grafana_queries() -> list[Query]:
    out = []
    for p in grafana_panels():
        for t in p.get("targets", []):
            out.append(Query(f"grafana: {p['title']} ({t['refId']})", t.get("expr", ""),
                             legend_labels(t.get("legendFormat")), variables=True))
    return out


def workbook_queries() -> list[Query]:
    return [Query(f"workbook: {i['content'].get('title', i['name'])}",
                  json.loads(i["content"]["query"])["queryText"], set())
            for i in workbook_items() if i["type"] == 3]


def rule_queries(groups: list[dict], where: str, expr_key: str = "expr") -> list[Query]:
    return [Query(f"{where}: {r['alert']}", r[expr_key], annotation_labels(r))
            for g in groups for r in g["rules"]]


def azure_rules() -> dict:
    return json.loads(AZURE_RULES.read_text())


def prometheus_rule() -> dict:
    (doc,) = load_yaml_docs(RULES_COMPONENT / "prometheusrule.yaml")
    return doc


def all_queries() -> list[Query]:
    return (grafana_queries() + workbook_queries() + rule_queries(alerts()["groups"], "alerts.yaml")
            + rule_queries(azure_rules()["groups"], "alerts.azure.json", "expression")
            + rule_queries(prometheus_rule()["spec"]["groups"], "PrometheusRule"))


def load_render_script():
    """deploy/monitoring/render_azure_rules.py as a module, without writing bytecode under
    deploy/ (every file there is scanned as text)."""
    path = MONITORING / "render_azure_rules.py"
    namespace = {"__name__": "render_azure_rules", "__file__": str(path)}
    exec(compile(path.read_text(), str(path), "exec"), namespace)
    return namespace


def promtool() -> str:
    tool = shutil.which("promtool")
    if not tool:
        pytest.skip("promtool not installed (Debian package prometheus; .ci/run installs it)")
    return tool


# --------------------------------------------------------------------------------------------
# Dashboards
# --------------------------------------------------------------------------------------------


def test_grafana_dashboard_panels_all_have_a_query_on_the_datasource_variable():
    d = dashboard()
    variables = {v["name"]: v for v in d["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    panels = grafana_panels()
    assert panels
    ids = [p["id"] for p in d["panels"]] + [c["id"] for p in d["panels"] for c in p.get("panels", [])]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    for p in panels:
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        assert p.get("targets"), f"panel {p['title']!r} has no query"
        for t in p["targets"]:
            assert t.get("expr", "").strip(), f"panel {p['title']!r} {t.get('refId')}: empty query"
            assert t.get("datasource", p["datasource"]) == p["datasource"], p["title"]
        assert {"h", "w", "x", "y"} <= set(p["gridPos"]), p["title"]
    # The other variables query the same datasource for label values keyward emits.
    for name, v in variables.items():
        if v["type"] != "query":
            continue
        assert v["datasource"]["uid"] == "${datasource}", name
        m = re.fullmatch(r"label_values\((.+), (\w+)\)", v["query"]["query"])
        assert m, f"variable {name}: {v['query']['query']}"
        checker = Checker()
        have = checker.labels(PromQL(m.group(1)).parse())
        assert not checker.errors and m.group(2) in have, (name, checker.errors)


def test_workbook_queries_azure_monitor_managed_prometheus():
    """The shape of the Prometheus Explorer workbook that Azure Monitor workspaces ship
    (microsoft/Application-Insights-Workbooks, "Azure Monitor - Workspaces/Prometheus
    Explorer"): query items of queryType 16 on microsoft.monitor/accounts, the query a JSON
    string of the PrometheusQueryProvider."""
    wb = workbook()
    assert wb["version"] == "Notebook/1.0"
    items = workbook_items()
    (params,) = [i for i in items if i["type"] == 9]
    by_name = {p["name"]: p for p in params["content"]["parameters"]}
    assert by_name["TimeRange"]["type"] == 4
    workspace = by_name["Workspace"]
    assert workspace["type"] == 5 and workspace["isRequired"] is True
    assert workspace["queryType"] == 1 and workspace["resourceType"] == "microsoft.resourcegraph/resources"
    assert workspace["crossComponentResources"] == ["value::all"], "every subscription's workspaces"
    assert "microsoft.monitor/accounts" in workspace["query"] and WORKSPACE_PLACEHOLDER in workspace["query"]
    assert WORKBOOK.read_text().count(WORKSPACE_PLACEHOLDER) == 1, "the Bicep fills in one placeholder"
    charts = [i for i in items if i["type"] == 3]
    assert charts
    for item in charts:
        c = item["content"]
        where = c.get("title", item["name"])
        assert c["version"] == "KqlItem/1.0", where
        assert c["queryType"] == 16 and c["resourceType"] == "microsoft.monitor/accounts", where
        assert c["crossComponentResources"] == ["{Workspace}"], where
        assert c["timeContextFromParameter"] == "TimeRange", where
        query = json.loads(c["query"])
        assert query["version"] == "PrometheusQueryProvider/1.0", where
        assert query["type"] in ("query", "query_range"), where
        assert query["queryText"].strip(), f"{where}: empty query"
        assert c["visualization"] == ("timechart" if query["type"] == "query_range" else "table"), where
    assert len({i["name"] for i in items}) == len(items), "item names repeat"


def charted(queries: list[Query]) -> set[str]:
    out = set()
    for q in queries:
        checker = Checker()
        checker.labels(PromQL(promql_of(q)).parse())
        out |= checker.metrics
    return out


def test_both_dashboards_chart_every_metric():
    assert charted(grafana_queries()) == set(METRICS), set(METRICS) ^ charted(grafana_queries())
    assert charted(workbook_queries()) == set(METRICS), set(METRICS) ^ charted(workbook_queries())


# --------------------------------------------------------------------------------------------
# Every query: metrics keyward emits, labels they have
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("query", all_queries(), ids=lambda q: q.where)
def test_query_reads_keyward_metrics_and_their_labels(query):
    assert query.expr.strip(), "empty query"
    errors = check_query(query)
    assert not errors, f"{query.expr}\n  " + "\n  ".join(errors)


def test_every_query_parses_with_promtool(tmp_path):
    """Each expression as a recording rule, so promtool's PromQL parser reads every one."""
    tool = promtool()
    rules = [{"record": f"keyward_check_{i}", "expr": promql_of(q)} for i, q in enumerate(all_queries())]
    path = tmp_path / "queries.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "queries", "rules": rules}]}))
    out = subprocess.run([tool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


def test_query_checker_catches_mistakes():
    """The checks above are not vacuous."""
    bad = {
        "sum(rate(keyward_requests_total[5m]))": "not a metric",
        'sum by (client) (rate(http_server_request_duration_seconds_count{keyward_listener="ingress"}[5m]))':
            "no client",
        "sum(rate(http_server_request_duration_seconds_count[5m]))": "keyward_listener",
        'keyward_auth_failures_total{reason="wrong_key"}': "is one of",
        'keyward_auth_failures_total{listener="ingress"}': "has no label",
        'histogram_quantile(0.9, sum by (http_route) '
        '(rate(http_client_request_duration_seconds_bucket{keyward_listener="egress"}[5m])))': "without le",
        'keyward_upstream_errors_total{listener="both"}': "is one of",
        "sum(keyward_secret_expiry_seconds)": "prints",
    }
    for expr, why in bad.items():
        errors = check_query(Query("self-test", expr, {"secret"} if why == "prints" else set()))
        assert any(why in e for e in errors), (expr, errors)
    assert not check_query(Query("self-test", "min by (secret) (keyward_secret_expiry_seconds) / 86400", {"secret"}))


def test_auth_reasons_are_read_from_the_source():
    reasons = denial_reasons()
    assert {"missing", "invalid", "rate_limited", "expired", "bad_signature"} <= reasons, reasons


@pytest.mark.parametrize("metric", sorted(METRICS))
def test_keyward_emits(metric):
    """Read from keyward's metrics code. Until keyward exports the OpenTelemetry HTTP
    semantic-convention histograms (issue 19), the http_* ones fail here."""
    sources = metrics_sources()
    assert sources, "no proxy/src/**/metrics*.rs"
    words = emitted_words()
    where = ", ".join(str(p.relative_to(ROOT)) for p in sources)
    assert is_emitted(metric, words), f"keyward does not emit {metric} (no such name in {where})"
    missing = {label for label in METRICS[metric][1] if label not in words}
    assert not missing, f"{metric}: labels {sorted(missing)} appear nowhere in {where}"


def test_emitted_names_are_read_from_literals_not_tests(tmp_path, monkeypatch):
    src = tmp_path / "proxy/src"
    src.mkdir(parents=True)
    (src / "metrics.rs").write_text(
        '// "keyward_commented_total"\n'
        'const A: &str = "keyward_secrets_missing"; let q = \'"\'; let s = "{x}";\n'
        'fn f<\'a>() { meter.u64_counter("keyward.auth_failures").build(); }\n'
        '#[cfg(test)]\nmod tests { const B: &str = "keyward_secret_refreshes_total"; }\n')
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    words = emitted_words()
    assert is_emitted("keyward_secrets_missing", words)
    assert is_emitted("keyward_auth_failures_total", words)
    assert not is_emitted("keyward_secret_refreshes_total", words), "a name only the tests use"
    assert not is_emitted("keyward_commented_total", words), "a name in a comment"


# --------------------------------------------------------------------------------------------
# Alert rules
# --------------------------------------------------------------------------------------------


def alert_rules() -> dict[str, dict]:
    return {r["alert"]: r for g in alerts()["groups"] for r in g["rules"]}


def test_promtool_check_rules():
    out = subprocess.run([promtool(), "check", "rules", str(ALERTS)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


def test_promtool_test_rules():
    out = subprocess.run([promtool(), "test", "rules", ALERTS_TEST.name], capture_output=True, text=True,
                         timeout=120, cwd=MONITORING)
    assert out.returncode == 0, out.stdout + out.stderr


def test_every_alert_fires_in_a_unit_test():
    tests = yaml.safe_load(ALERTS_TEST.read_text())
    assert tests["rule_files"] == [ALERTS.name]
    fired = {case["alertname"] for t in tests["tests"] for case in t.get("alert_rule_test", [])
             if case.get("exp_alerts")}
    assert set(alert_rules()) <= fired, f"no firing case for {set(alert_rules()) - fired}"


def test_alerts_cover_the_secret_lifecycle_auth_and_leaks():
    rules = alert_rules()
    interval = default_refresh_interval()
    expected = {
        "KeywardSecretNearExpiry": "floor(min by (secret) (keyward_secret_expiry_seconds) / 86400) < 7",
        "KeywardSecretSnapshotStale": f"keyward_secret_snapshot_age_seconds > 3 * {interval}",
        "KeywardSecretsNeverLoaded": "keyward_secret_snapshot_age_seconds == -1",
        "KeywardSecretsMissing": "keyward_secrets_missing > 0",
    }
    for name, expr in expected.items():
        assert rules[name]["expr"] == expr, f"{name}: {rules[name]['expr']}"
    burst = rules["KeywardAuthFailureBurst"]
    assert re.fullmatch(r'sum\(rate\(keyward_auth_failures_total\{reason!="missing"\}\[5m\]\)\) > [\d.]+',
                        burst["expr"])
    assert burst["for"] == "10m"
    leak = rules["KeywardSecretLeakBlocked"]["expr"]
    assert "increase(keyward_secret_leaks_blocked_total[5m])) > 0" in leak
    assert "unless keyward_secret_leaks_blocked_total offset 5m" in leak, "the first leak of a series"
    assert "for" not in rules["KeywardSecretLeakBlocked"], "a leak alerts at once"
    # README's configuration table states the same default the rule assumes.
    assert f"| `secrets.refresh_interval` | `{interval}s` |" in (ROOT / "README.md").read_text()


def test_alert_labels_and_annotations():
    for name, rule in alert_rules().items():
        assert re.fullmatch(r"Keyward[A-Z]\w+", name)
        assert rule["labels"]["severity"] in ("critical", "warning"), name
        assert set(rule["annotations"]) == {"summary", "description"}, name
        for text in rule["annotations"].values():
            # Only label values and the query's number are printed: never a value keyward read.
            for tmpl in re.findall(r"\{\{(.*?)\}\}", text):
                assert re.fullmatch(r"\s*(\$labels\.\w+|\$value)\s*", tmpl), f"{name}: {{{{{tmpl}}}}}"


# --------------------------------------------------------------------------------------------
# The copies: Azure Monitor rule groups and the PrometheusRule
# --------------------------------------------------------------------------------------------


def test_azure_rules_are_rendered_from_alerts_yaml():
    script = load_render_script()
    assert azure_rules() == script["render"](alerts()), (
        "alerts.azure.json is out of date: python3 deploy/monitoring/render_azure_rules.py")
    assert AZURE_RULES.read_text() == script["rendered_text"]()
    for group, source in zip(azure_rules()["groups"], alerts()["groups"]):
        assert [r["expression"] for r in group["rules"]] == [r["expr"] for r in source["rules"]]
        for rule, src in zip(group["rules"], source["rules"]):
            assert rule["alert"] == src["alert"] and rule["labels"] == src["labels"]
            assert rule["annotations"] == src["annotations"]
            assert 0 <= rule["severity"] <= 4
            assert ("for" in rule) == ("for" in src)
    assert script["iso8601"]("10m") == "PT10M" and script["iso8601"]("1h30m") == "PT1H30M"
    assert script["iso8601"]("90s") == "PT1M30S"
    with pytest.raises(ValueError):
        script["iso8601"]("1d")


def test_prometheus_rule_component_is_alerts_yaml(tmp_root):
    rule = prometheus_rule()
    assert rule["apiVersion"] == "monitoring.coreos.com/v1" and rule["kind"] == "PrometheusRule"
    assert rule["spec"]["groups"] == alerts()["groups"], "copy alerts.yaml's groups into prometheusrule.yaml"
    comp = yaml.safe_load((RULES_COMPONENT / "kustomization.yaml").read_text())
    assert comp["kind"] == "Component" and comp["resources"] == ["prometheusrule.yaml"]
    # An overlay with the component: the keyvault variant plus the rule, in keyward's namespace.
    tree = tmp_root / "k8s-monitoring"
    if not tree.exists():
        shutil.copytree(K8S, tree)
    vdir = tree / "variant-keyvault-prometheus-rules"
    vdir.mkdir(exist_ok=True)
    (vdir / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "resources": ["../overlays/keyvault"], "components": ["../components/prometheus-rules"]}))
    docs = render_with_tool(vdir) if kustomize_command() else render_builtin(vdir)
    rendered = one(docs, "PrometheusRule", "keyward")
    assert rendered["metadata"]["namespace"] == "keyward"
    assert rendered["spec"]["groups"] == alerts()["groups"]
    keyvault, _ = render_variant("keyvault", tmp_root)
    others = [d for d in docs if d["kind"] != "PrometheusRule"]
    key = lambda d: (d["kind"], d["metadata"]["name"])  # noqa: E731
    assert sorted(map(key, others)) == sorted(map(key, keyvault)), "the component adds the rule only"


# --------------------------------------------------------------------------------------------
# Bicep
# --------------------------------------------------------------------------------------------


def test_bicep_module_loads_the_workbook_and_the_rules():
    text = BICEP_MODULE.read_text()
    assert "loadJsonContent('../../monitoring/alerts.azure.json')" in text
    assert (BICEP_MODULE.parent / "../../monitoring/alerts.azure.json").resolve() == AZURE_RULES
    assert (BICEP_MODULE.parent / "../../monitoring/workbook.json").resolve() == WORKBOOK
    assert re.search(r"replace\(loadTextContent\('\.\./\.\./monitoring/workbook\.json'\), "
                     rf"'{re.escape(WORKSPACE_PLACEHOLDER)}', toLower\(monitoringWorkspaceId\)\)", text)
    # No rule is written in the Bicep: every one comes from the loaded file.
    assert "expression:" not in text and "alert:" not in text
    workbook_at = re.search(r"^resource workbook 'Microsoft\.Insights/workbooks@2023-06-01' = ", text, re.M)
    wb = block_after(text, workbook_at.end())
    assert "kind: 'shared'" in wb and "serializedData: workbookData" in wb and "category: 'workbook'" in wb
    assert "name: guid(" in wb, "a workbook's name is a GUID"
    groups_at = re.search(r"^resource ruleGroups 'Microsoft\.AlertsManagement/prometheusRuleGroups@2023-03-01' = "
                          r"\[for group in rules\.groups: ", text, re.M)
    assert groups_at, "one rule group per group of alerts.azure.json"
    groups = block_after(text, groups_at.end())
    assert re.search(r"scopes: \[\s*monitoringWorkspaceId\s*\]", groups)
    assert "interval: group.interval" in groups
    assert "rules: map(group.rules, rule => union(rule, { actions: actions }))" in groups
    assert "actionGroupId: id" in text


def test_bicep_main_deploys_monitoring_only_with_a_workspace():
    main = (ACA / "main.bicep").read_text()
    assert re.search(r"^param monitoringWorkspaceId string = ''$", main, re.M)
    assert re.search(r"^param monitoringActionGroupId string = ''$", main, re.M)
    m = re.search(r"^module (\w+) 'modules/prometheus-monitoring\.bicep' = if \(!empty\(monitoringWorkspaceId\)\) ",
                  main, re.M)
    assert m, "the module is deployed only when monitoringWorkspaceId is set"
    call = module_call(main, m.group(1))
    assert re.search(r"^\s{4}monitoringWorkspaceId: monitoringWorkspaceId$", call, re.M)
    assert re.search(r"^\s{4}actionGroupId: monitoringActionGroupId$", call, re.M)
    declared, required = module_params(BICEP_MODULE)
    assert required == {"location", "nameSuffix", "tags", "monitoringWorkspaceId"}, required
    params = json.loads((ACA / "main.parameters.json").read_text())["parameters"]
    assert params["monitoringWorkspaceId"]["value"] == "${KEYWARD_MONITORING_WORKSPACE_ID=}"
    assert params["monitoringActionGroupId"]["value"] == "${KEYWARD_MONITORING_ACTION_GROUP_ID=}"


def test_render_script_check_mode(tmp_path):
    """--check is what a reviewer runs; it fails on a stale file."""
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    script = MONITORING / "render_azure_rules.py"
    out = subprocess.run([sys.executable, str(script), "--check"], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    copy = tmp_path / "monitoring"
    shutil.copytree(MONITORING, copy)
    (copy / "alerts.yaml").write_text(ALERTS.read_text().replace("for: 10m", "for: 15m", 1))
    out = subprocess.run([sys.executable, str(copy / script.name), "--check"], capture_output=True, text=True, env=env)
    assert out.returncode == 1 and "out of date" in out.stderr
