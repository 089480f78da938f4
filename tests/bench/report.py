#!/usr/bin/env python3
"""Results of tests/bench/run: recording and the tables (Python stdlib only).

  report.py record FILE SECTION TARGET [--cpu-ticks N [--user-ticks N --system-ticks N]
                                         --clk-tck N]   < tool output
      turns `RESULT name value` lines (wrk's latency.lua, sse.py, idle_conns.py) or h2load's
      summary into `section target metric value` rows of FILE (TSV).
  report.py table FILE [FILE...]
      prints the tables; with several files (several runs), every figure is the median over
      the runs, and every ratio the median of the per-run ratios.

A section named `NAME#ROUND` is one round of a scenario run several times in one run (the
one-core and capability rows): its figures are the median over the rounds (errors: the
most in any round), under NAME.
"""
import re
import statistics
import sys
from collections import defaultdict

TARGETS = ["direct", "keyward", "nginx", "haproxy"]
LOAD_SECTIONS = [
    ("h1-t1", "HTTP/1.1 wrk -t1"),
    ("h1-t2", "HTTP/1.1 wrk -t2"),
    ("h2c", "h2c h2load -t1"),
]
GRANT_SECTIONS = [("grant-t1", "grant wrk -t1"), ("grant-t2", "grant wrk -t2")]
GRANT_TARGETS = ["keyward-open", "keyward-granted"]
CORE_TARGETS = ["keyward", "nginx", "haproxy"]
# The capability rows: (section, baseline target, target with the capability, what, baseline
# name, the throughput cost budget from the capability's issue or None).
CAPABILITIES = [
    ("cap-token", "api-key", "bearer", "bearer token (RS256, cached)", "X-Api-Key", None),
    ("grant-t1", "keyward-open", "keyward-granted", "tools/call grant, -t1 (2 workers)",
     "no grant", 0.10),
    ("grant-t2", "keyward-open", "keyward-granted", "tools/call grant, -t2 (2 workers)",
     "no grant", 0.10),
    ("cap-net-rpc", "off", "redact", "safety net, 250 B JSON-RPC", "net off", 0.05),
    ("cap-net-sse", "off", "redact", "safety net, 64 KiB SSE", "net off", 0.10),
]
# A capability baseline at this fraction of the upstream alone or more is upstream-bound.
UPSTREAM_BOUND = 0.85
# Per-round figures that are not medians: a row is worthless if any round had errors.
WORST_OF_ROUNDS = {"errors", "non2xx"}
MIB = 1024.0


def parse_h2load(text):
    out = {}
    m = re.search(r"finished in ([\d.]+)(\w+), ([\d.]+) req/s", text)
    if m:
        out["rps"] = float(m.group(3))
    m = re.search(r"requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded, "
                  r"(\d+) failed, (\d+) errored, (\d+) timeout", text)
    if m:
        out["requests"] = float(m.group(3))
        out["errors"] = float(m.group(4)) + float(m.group(5)) + float(m.group(6))
    m = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", text)
    if m:
        out["non2xx"] = float(m.group(2)) + float(m.group(3)) + float(m.group(4))
    m = re.search(r"time for request:\s+([\d.]+)(us|ms|s)\s+([\d.]+)(us|ms|s)\s+([\d.]+)(us|ms|s)",
                  text)
    if m:
        scale = {"us": 1.0, "ms": 1000.0, "s": 1e6}
        out["mean_us"] = float(m.group(5)) * scale[m.group(6)]
        out["max_us"] = float(m.group(3)) * scale[m.group(4)]
    return out


def record(argv):
    path, section, target = argv[0], argv[1], argv[2]
    opts = dict(zip(argv[3::2], argv[4::2]))
    text = sys.stdin.read()
    values = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] == "RESULT":
            values[parts[1]] = float(parts[2])
    if "finished in" in text:
        values.update(parse_h2load(text))
    if "requests" in values and "duration_us" in values and "rps" not in values:
        values["rps"] = values["requests"] / (values["duration_us"] / 1e6)
    if "--cpu-ticks" in opts and values.get("requests"):
        seconds = float(opts["--cpu-ticks"]) / float(opts["--clk-tck"])
        values["cpu_s"] = seconds
        values["cpu_s_per_100k"] = seconds / values["requests"] * 100000.0
        # The split, where given: microseconds of user and of system time a request.
        for part in ("user", "system"):
            if f"--{part}-ticks" in opts:
                ticks = float(opts[f"--{part}-ticks"]) / float(opts["--clk-tck"])
                values[f"{part}_us_per_req"] = ticks / values["requests"] * 1e6
    for key, value in opts.items():
        if key.startswith("--set-"):
            values[key[len("--set-"):]] = float(value)
    if not values:
        sys.stderr.write(f"no result for {section} {target}:\n{text}\n")
        return 1
    with open(path, "a") as f:
        for name, value in values.items():
            f.write(f"{section}\t{target}\t{name}\t{value}\n")
    return 0


def load(paths):
    runs = []
    for path in paths:
        data = defaultdict(dict)
        rounds = defaultdict(lambda: defaultdict(list))
        with open(path) as f:
            for line in f:
                section, target, metric, value = line.rstrip("\n").split("\t")
                if "#" in section:
                    rounds[(section.split("#", 1)[0], target)][metric].append(float(value))
                else:
                    data[(section, target)][metric] = float(value)
        for key, metrics in rounds.items():
            for metric, values in metrics.items():
                pick = max if metric in WORST_OF_ROUNDS else statistics.median
                data[key][metric] = pick(values)
            data[key]["rounds"] = float(max(len(v) for v in metrics.values()))
        runs.append(data)
    return runs


def median_of(runs, fn):
    values = []
    for run in runs:
        try:
            v = fn(run)
        except (KeyError, ZeroDivisionError, TypeError):
            continue
        if v is not None:
            values.append(v)
    return statistics.median(values) if values else None


def fmt(v, spec="{:.0f}", none="-"):
    return none if v is None else spec.format(v)


def table(paths):
    runs = load(paths)
    n = len(runs)
    get = lambda s, t, m: (lambda run: run[(s, t)][m])
    lines = []
    w = lines.append
    w(f"keyward bench: {n} run(s){' (medians over the runs)' if n > 1 else ''}")
    w("")
    w("Throughput and latency (same client, same connections for every target; CPU is the")
    w("proxy's own process(es), for 'direct' the upstream's; p99.9 from wrk's Lua summary)")
    hdr = f"{'scenario':<18}{'target':<16}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'p99.9 ms':>10}" \
          f"{'mean ms':>9}{'errors':>8}{'CPU s/100k':>12}"
    w(hdr)
    w("-" * len(hdr))
    sections = LOAD_SECTIONS + [("egress", "egress wrk -t1")]
    for section, label in sections:
        targets = ["keyward-egress"] if section == "egress" else TARGETS
        for target in targets:
            if not any((section, target) in run for run in runs):
                continue
            m = lambda metric: median_of(runs, get(section, target, metric))
            ms = lambda metric: None if m(metric) is None else m(metric) / 1000.0
            w(f"{label:<18}{target:<16}{fmt(m('rps')):>9}{fmt(ms('p50_us'), '{:.2f}'):>9}"
              f"{fmt(ms('p99_us'), '{:.2f}'):>9}{fmt(ms('p99.9_us'), '{:.2f}'):>10}"
              f"{fmt(ms('mean_us'), '{:.2f}'):>9}{fmt(m('errors')):>8}"
              f"{fmt(m('cpu_s_per_100k'), '{:.2f}'):>12}")
    w("")
    w("Ratios (median of per-run ratios; req/s: higher is better for keyward; p99 and CPU:")
    w("lower is better)")
    hdr = f"{'scenario':<18}{'metric':<14}{'kw/nginx':>10}{'kw/haproxy':>12}{'kw/direct':>11}"
    w(hdr)
    w("-" * len(hdr))

    def ratio(section, metric, other, mine="keyward", other_section=None):
        return pair_ratio(runs, section, mine, other, metric, other_section)

    for section, label in LOAD_SECTIONS:
        for metric, name in [("rps", "req/s"), ("p99_us", "p99"), ("p99.9_us", "p99.9"),
                             ("mean_us", "mean latency"), ("cpu_s_per_100k", "CPU/100k")]:
            r = [ratio(section, metric, t) for t in ("nginx", "haproxy", "direct")]
            if all(x is None for x in r):
                continue
            w(f"{label:<18}{name:<14}{fmt(r[0], '{:.2f}'):>10}{fmt(r[1], '{:.2f}'):>12}"
              f"{fmt(r[2], '{:.2f}'):>11}")
    r_dir = ratio("egress", "rps", "direct", mine="keyward-egress", other_section="h1-t1")
    r_in = ratio("egress", "rps", "keyward", mine="keyward-egress", other_section="h1-t1")
    p_dir = ratio("egress", "p99_us", "direct", mine="keyward-egress", other_section="h1-t1")
    w(f"{'egress wrk -t1':<18}{'req/s':<14}{'':>10}{'':>12}{fmt(r_dir, '{:.2f}'):>11}"
      f"   (egress/ingress req/s {fmt(r_in, '{:.2f}')})")
    w(f"{'egress wrk -t1':<18}{'p99':<14}{'':>10}{'':>12}{fmt(p_dir, '{:.2f}'):>11}")
    w("")

    core_table(runs, w)
    capability_table(runs, w)
    instructions_table(runs, w)

    w("Memory (MiB; nginx = master + workers summed, so shared pages count twice; keyward and")
    w("HAProxy are one process each)")
    hdr = f"{'target':<12}{'idle RSS':>10}{'peak RSS':>10}{'before 10k':>12}{'10k idle':>10}" \
          f"{'KiB/conn':>10}{'conns':>8}{'closed':>8}"
    w(hdr)
    w("-" * len(hdr))
    for target in ["keyward", "nginx", "haproxy"]:
        m = lambda s, metric: median_of(runs, get(s, target, metric))
        kib = lambda s, metric: None if m(s, metric) is None else m(s, metric) / MIB
        w(f"{target:<12}{fmt(kib('mem', 'idle_rss_kib'), '{:.1f}'):>10}"
          f"{fmt(kib('mem', 'peak_rss_kib'), '{:.1f}'):>10}"
          f"{fmt(kib('conn-idle', 'rss_before_kib'), '{:.1f}'):>12}"
          f"{fmt(kib('conn-idle', 'rss_after_kib'), '{:.1f}'):>10}"
          f"{fmt(m('conn-idle', 'per_conn_kib'), '{:.2f}'):>10}"
          f"{fmt(m('conn-idle', 'connections')):>8}{fmt(m('conn-idle', 'closed_by_peer')):>8}")
    w("")

    w("Large responses: a 16 MiB body to 4 readers as fast as they read (MiB/s)")
    hdr = f"{'target':<12}{'MiB/s':>10}{'/ direct':>10}"
    w(hdr)
    w("-" * len(hdr))
    for target in TARGETS:
        m = median_of(runs, get("big", target, "mib_per_s"))
        r = None if target == "direct" else median_of(
            runs, lambda run: run[("big", target)]["mib_per_s"] / run[("big", "direct")]["mib_per_s"])
        w(f"{target:<12}{fmt(m):>10}{fmt(r, '{:.2f}'):>10}")
    w("")

    ct = {k: v for run in runs for (s, t), vals in run.items() if s == "ct" for k, v in vals.items()}
    if ct:
        w("Constant time (dudect, max |t| of the key check's classes; < 5 at 10^6 is the target)")
        for name in sorted(ct):
            w(f"  {name[3:]:<32}{median_of(runs, get('ct', 'keyward', name)):>8.2f}")
        w("")

    w("SSE: emit-to-receive latency per event (µs), one stream, events every 5 ms")
    hdr = f"{'target':<12}{'events':>8}{'median':>10}{'p90':>10}{'p99':>10}{'added median':>14}"
    w(hdr)
    w("-" * len(hdr))
    for target in TARGETS:
        m = lambda metric: median_of(runs, get("sse", target, metric))
        added = None if target == "direct" else median_of(
            runs, lambda run: run[("sse", target)]["median_us"] - run[("sse", "direct")]["median_us"])
        w(f"{target:<12}{fmt(m('events')):>8}{fmt(m('median_us'), '{:.1f}'):>10}"
          f"{fmt(m('p90_us'), '{:.1f}'):>10}{fmt(m('p99_us'), '{:.1f}'):>10}"
          f"{fmt(added, '{:+.1f}'):>14}")
    w("")

    grant_table(runs, w)
    scale_table(runs, w)
    start_table(runs, w)

    w("Targets")
    checks = []
    for section, label in LOAD_SECTIONS[:2]:
        for other in ("nginx", "haproxy"):
            r = ratio(section, "rps", other)
            checks.append((f"{label}: req/s keyward >= 1.3 x {other}", r, r is not None and r >= 1.3,
                           f"{fmt(r, '{:.2f}')}x"))
            p = ratio(section, "p99_us", other)
            checks.append((f"{label}: p99 keyward <= {other}", p, p is not None and p <= 1.0,
                           f"{fmt(p, '{:.2f}')}x"))
    idle = median_of(runs, get("mem", "keyward", "idle_rss_kib"))
    checks.append(("keyward idle RSS < 15 MiB", idle, idle is not None and idle / MIB < 15,
                   f"{fmt(None if idle is None else idle / MIB, '{:.1f}')} MiB"))
    conn = median_of(runs, get("conn-idle", "keyward", "rss_after_kib"))
    count = median_of(runs, get("conn-idle", "keyward", "connections"))
    checks.append((f"keyward RSS with {fmt(count)} idle connections < 64 MiB", conn,
                   conn is not None and conn / MIB < 64,
                   f"{fmt(None if conn is None else conn / MIB, '{:.1f}')} MiB"))
    sse = median_of(runs, lambda run: run[("sse", "keyward")]["median_us"]
                    - run[("sse", "direct")]["median_us"])
    checks.append(("SSE added latency per event (median) < 1 ms", sse,
                   sse is not None and sse < 1000, f"{fmt(sse, '{:.0f}')} µs"))
    for section, label in GRANT_SECTIONS:
        r = grant_ratio(runs, section, "rps")
        cost = None if r is None else 1.0 - r
        checks.append((f"{label}: a grant costs < 10 % of tools/call req/s", cost,
                       cost is not None and cost < 0.10, f"{fmt(cost, '{:+.1%}')}"))
    checks.extend(new_checks(runs))
    for name, value, ok, shown in checks:
        verdict = "n/a " if value is None else ("MET " if ok else "MISS")
        w(f"  [{verdict}] {name}: {shown}")
    print("\n".join(lines))
    return 0


def pair_ratio(runs, section, mine, other, metric, other_section=None):
    """Median over the runs of mine / other for one metric."""
    other_section = other_section or section
    return median_of(runs, lambda run: run[(section, mine)][metric]
                     / run[(other_section, other)][metric])


def core_table(runs, w):
    """One core each: every proxy one worker pinned to one CPU, wrk and the upstream on the
    other; medians of the rounds."""
    if not any(("core1", t) in run for run in runs for t in CORE_TARGETS):
        return
    get = lambda t, m: (lambda run: run[("core1", t)][m])
    rounds = median_of(runs, get("keyward", "rounds"))
    w("One core each: one worker per proxy pinned to one CPU, wrk and the upstream pinned to the")
    w(f"other; wrk -t1 -c64, the targets taking turns, median of {fmt(rounds)} rounds; CPU is the")
    w("proxy's own process(es), split into user and system microseconds a request")
    hdr = f"{'target':<18}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'p99.9 ms':>10}{'errors':>8}" \
          f"{'CPU s/100k':>12}{'user µs':>9}{'sys µs':>8}"
    w(hdr)
    w("-" * len(hdr))
    for target in CORE_TARGETS:
        m = lambda metric: median_of(runs, get(target, metric))
        ms = lambda metric: None if m(metric) is None else m(metric) / 1000.0
        w(f"{target:<18}{fmt(m('rps')):>9}{fmt(ms('p50_us'), '{:.2f}'):>9}"
          f"{fmt(ms('p99_us'), '{:.2f}'):>9}{fmt(ms('p99.9_us'), '{:.2f}'):>10}"
          f"{fmt(m('errors')):>8}{fmt(m('cpu_s_per_100k'), '{:.2f}'):>12}"
          f"{fmt(m('user_us_per_req'), '{:.1f}'):>9}{fmt(m('system_us_per_req'), '{:.1f}'):>8}")
    for other in ("nginx", "haproxy"):
        r = {metric: pair_ratio(runs, "core1", "keyward", other, metric)
             for metric in ("rps", "p99_us", "cpu_s_per_100k")}
        w(f"{'keyward / ' + other:<18}req/s {fmt(r['rps'], '{:.2f}')}   p99 "
          f"{fmt(r['p99_us'], '{:.2f}')}   CPU/100k {fmt(r['cpu_s_per_100k'], '{:.2f}')}")
    w("")


def capability_table(runs, w):
    """Each capability against its own baseline in the same run: with / baseline."""
    present = [c for c in CAPABILITIES
               if any((c[0], c[2]) in run and (c[0], c[1]) in run for run in runs)]
    if not present:
        return
    w("What each capability costs, each against its own baseline in the same run (one core each")
    w("as above, medians of the rounds, unless the row says 2 workers: the grant rows below);")
    w("x = with / baseline; cost = 1 - req/s ratio")
    hdr = f"{'capability':<35}{'baseline':<10}{'req/s':>8}{'with':>8}{'x':>7}{'cost':>8}" \
          f"{'p99 x':>7}{'CPU/100k':>10}{'with':>7}{'x':>6}"
    w(hdr)
    w("-" * len(hdr))
    for section, base, mine, what, base_name, _ in present:
        m = lambda t, metric: median_of(runs, lambda run: run[(section, t)][metric])
        r = pair_ratio(runs, section, mine, base, "rps")
        w(f"{what:<35}{base_name:<10}{fmt(m(base, 'rps')):>8}{fmt(m(mine, 'rps')):>8}"
          f"{fmt(r, '{:.3f}'):>7}{fmt(None if r is None else 1 - r, '{:+.1%}'):>8}"
          f"{fmt(pair_ratio(runs, section, mine, base, 'p99_us'), '{:.2f}'):>7}"
          f"{fmt(m(base, 'cpu_s_per_100k'), '{:.2f}'):>10}"
          f"{fmt(m(mine, 'cpu_s_per_100k'), '{:.2f}'):>7}"
          f"{fmt(pair_ratio(runs, section, mine, base, 'cpu_s_per_100k'), '{:.2f}'):>6}")
        if section == "cap-net-sse" and any((section, "direct") in run for run in runs):
            w(f"{'  the stream from the upstream alone':<45}"
              f"{fmt(median_of(runs, lambda run: run[(section, 'direct')]['rps'])):>8} req/s "
              f"(near the baseline: the upstream set the pace; read CPU/100k)")
    diff = median_of(runs, lambda run: run[("grant-sse", "keyward-granted")]["median_us"]
                     - run[("grant-sse", "keyward-open")]["median_us"])
    if diff is not None:
        w(f"{'tools/list filter, per SSE event':<35}{'no grant':<10}"
          f"  {fmt(diff, '{:+.1f}')} µs median per event (2 workers; the grant SSE table below)")
    w("")


# The callgrind rows: (section, baseline, target, what, the budget of the instructions it adds
# or None). With the same system calls either way (strace), the share of user-space
# instructions a step adds bounds its share of CPU from above: the small answer's budget is
# checked on it. A 64 KiB stream's CPU is mostly the kernel's copies, so its instructions are
# shown only (its budget is checked on CPU per request above).
INSTRUCTIONS = [
    ("instr", "nginx", "keyward", "keyward (net on) vs nginx, GET", None),
    ("instr-rpc", "off", "redact", "safety net, 250 B JSON-RPC", 0.05),
    ("instr-sse64", "off", "redact", "safety net, 64 KiB SSE", None),
]


def instructions_table(runs, w):
    """Instructions per request (user space, callgrind), each against its baseline."""
    present = [r for r in INSTRUCTIONS if any((r[0], r[2]) in run for run in runs)]
    if not present:
        return
    w("Instructions per request (callgrind, user space, one worker, h2load -c 4 keep-alive;")
    w("the same from run to run on a busy machine; the kernel's share, about the same for")
    w("every proxy, is not in them; a `rep stos` counts once per byte)")
    hdr = f"{'what':<35}{'baseline':>10}{'with':>10}{'x':>7}{'added':>8}"
    w(hdr)
    w("-" * len(hdr))
    for section, base, mine, what, _ in present:
        m = lambda t: median_of(runs, lambda run: run[(section, t)]["instructions_per_request"])
        r = pair_ratio(runs, section, mine, base, "instructions_per_request")
        w(f"{what:<35}{fmt(m(base)):>10}{fmt(m(mine)):>10}{fmt(r, '{:.3f}'):>7}"
          f"{fmt(None if r is None else r - 1, '{:+.1%}'):>8}")
    w("")


def scale_table(runs, w):
    """SSE at scale: keyward's memory per open stream and the latency it adds per event."""
    counts = sorted({t for run in runs for (s, t) in run if s == "sse-scale"}, key=float)
    if not counts:
        return
    get = lambda t, m: (lambda run: run[("sse-scale", t)][m])
    one = lambda t, m: median_of(runs, get(t, m))
    active = one(counts[0], "active")
    every = one(counts[0], "event_ms")
    w(f"SSE at scale: streams held open through keyward (a client and a backend connection")
    w(f"each), events every {fmt(every)} ms on {fmt(active)} of them; keyward's RSS (MiB, per")
    w("stream KiB = (RSS open - RSS idle) / streams) and receive - emit per event (µs),")
    w("through keyward and straight from the emitter with all streams open")
    hdr = f"{'streams':>8}{'idle RSS':>10}{'RSS open':>10}{'KiB/str':>9}{'closed':>8}" \
          f"{'kw p50':>9}{'kw p99':>9}{'dir p50':>9}{'dir p99':>9}{'+p50':>8}{'+p99':>8}"
    w(hdr)
    w("-" * len(hdr))
    notes = []
    for t in counts:
        mib = lambda m: None if one(t, m) is None else one(t, m) / MIB
        w(f"{fmt(one(t, 'streams')):>8}{fmt(mib('rss_idle_kib'), '{:.1f}'):>10}"
          f"{fmt(mib('rss_kib'), '{:.1f}'):>10}{fmt(one(t, 'per_stream_kib'), '{:.1f}'):>9}"
          f"{fmt(one(t, 'closed_by_peer')):>8}{fmt(one(t, 'proxy_p50_us')):>9}"
          f"{fmt(one(t, 'proxy_p99_us')):>9}{fmt(one(t, 'direct_p50_us')):>9}"
          f"{fmt(one(t, 'direct_p99_us')):>9}{fmt(one(t, 'added_p50_us'), '{:+.0f}'):>8}"
          f"{fmt(one(t, 'added_p99_us'), '{:+.0f}'):>8}")
        requested, streams = one(t, "requested"), one(t, "streams")
        if requested is not None and streams is not None and requested > streams:
            notes.append(f"  {fmt(requested)} streams do not fit: keyward holds 2 descriptors "
                         f"per stream and its open-file limit is {fmt(one(t, 'nofile'))} (the "
                         f"hard limit; raising it needs CAP_SYS_RESOURCE), so {fmt(streams)} ran")
    for note in notes:
        w(note)
    w("")


def start_table(runs, w):
    """Start to ready: exec to the first 200 from /readyz."""
    m = lambda metric: median_of(runs, lambda run: run[("start", "keyward")][metric])
    if m("median_ms") is None:
        return
    w(f"Start to ready (exec to the first 200 from /readyz, polled every 1 ms; file secrets): "
      f"median {fmt(m('median_ms'), '{:.1f}')} ms over {fmt(m('runs'))} starts "
      f"(min {fmt(m('min_ms'), '{:.1f}')}, max {fmt(m('max_ms'), '{:.1f}')})")
    w("")


def new_checks(runs):
    """The targets of the one-core, capability, SSE-at-scale and start rows."""
    checks = []
    r = pair_ratio(runs, "core1", "keyward", "nginx", "rps")
    checks.append(("one core: req/s keyward >= 1.10 x nginx", r, r is not None and r >= 1.10,
                   f"{fmt(r, '{:.2f}')}x"))
    p = pair_ratio(runs, "core1", "keyward", "nginx", "p99_us")
    checks.append(("one core: p99 keyward <= nginx", p, p is not None and p <= 1.0,
                   f"{fmt(p, '{:.2f}')}x"))
    c = pair_ratio(runs, "core1", "keyward", "nginx", "cpu_s_per_100k")
    checks.append(("one core: CPU s/100k keyward <= nginx", c, c is not None and c <= 1.0,
                   f"{fmt(c, '{:.2f}')}x"))
    for section, base, mine, what, _, budget in CAPABILITIES:
        if budget is None or section.startswith("grant"):
            continue  # the grant rows have their own check above
        r = pair_ratio(runs, section, mine, base, "rps")
        cost = None if r is None else 1.0 - r
        # Where the baseline ran near the upstream alone, the upstream set the pace and the
        # req/s ratio says little: no verdict, the CPU ratio instead.
        ceiling = pair_ratio(runs, section, base, "direct", "rps")
        if cost is not None and ceiling is not None and ceiling >= UPSTREAM_BOUND:
            cpu = pair_ratio(runs, section, mine, base, "cpu_s_per_100k")
            checks.append((f"{what}: costs < {budget:.0%} of req/s", None, False,
                           f"{fmt(cost, '{:+.1%}')}, but the baseline ran at "
                           f"{fmt(ceiling, '{:.2f}')}x the upstream alone (upstream-bound); "
                           f"CPU/100k {fmt(cpu, '{:.2f}')}x"))
            continue
        checks.append((f"{what}: costs < {budget:.0%} of req/s", cost,
                       cost is not None and cost < budget, f"{fmt(cost, '{:+.1%}')}"))
    for section, base, mine, what, budget in INSTRUCTIONS:
        if budget is None:
            continue
        r = pair_ratio(runs, section, mine, base, "instructions_per_request")
        added = None if r is None else r - 1.0
        checks.append((f"{what}: adds < {budget:.0%} instructions per request", added,
                       added is not None and added < budget, f"{fmt(added, '{:+.1%}')}"))
    counts = sorted({t for run in runs for (s, t) in run if s == "sse-scale"}, key=float)
    for t in counts:
        kib = median_of(runs, lambda run: run[("sse-scale", t)]["per_stream_kib"])
        checks.append((f"SSE, {t} streams open: keyward RSS <= 40 KiB per stream", kib,
                       kib is not None and kib <= 40, f"{fmt(kib, '{:.1f}')} KiB"))
        added = median_of(runs, lambda run: run[("sse-scale", t)]["added_p50_us"])
        checks.append((f"SSE, {t} streams open: added latency per event (p50) < 1 ms", added,
                       added is not None and added < 1000, f"{fmt(added, '{:+.0f}')} µs"))
    start = median_of(runs, lambda run: run[("start", "keyward")]["median_ms"])
    checks.append(("start to ready (file secrets) < 100 ms", start,
                   start is not None and start < 100, f"{fmt(start, '{:.1f}')} ms"))
    return checks


def grant_ratio(runs, section, metric):
    """Median over the runs of granted / open for one metric of one grant scenario."""
    return median_of(runs, lambda run: run[(section, "keyward-granted")][metric]
                     / run[(section, "keyward-open")][metric])


def grant_table(runs, w):
    """What a grant costs: the same MCP requests from keyward's two clients, one process."""
    if not any((s, t) in run for run in runs for s, _ in GRANT_SECTIONS for t in GRANT_TARGETS):
        return
    get = lambda s, t, m: (lambda run: run[(s, t)][m])
    w("What a grant costs: the same tools/call POSTed by keyward's unrestricted client (open:")
    w("streamed untouched) and by its client with tools = [\"get_activity_*\"] (granted: body")
    w("read, parsed and checked); one process, wrk -c64 as above, the order swapped for -t2")
    hdr = f"{'scenario':<18}{'client':<17}{'req/s':>8}{'p50 ms':>9}{'p99 ms':>9}{'p99.9 ms':>10}" \
          f"{'errors':>8}{'CPU s/100k':>12}"
    w(hdr)
    w("-" * len(hdr))
    for section, label in GRANT_SECTIONS:
        for target in GRANT_TARGETS:
            if not any((section, target) in run for run in runs):
                continue
            m = lambda metric: median_of(runs, get(section, target, metric))
            ms = lambda metric: None if m(metric) is None else m(metric) / 1000.0
            w(f"{label:<18}{target:<17}{fmt(m('rps')):>8}{fmt(ms('p50_us'), '{:.2f}'):>9}"
              f"{fmt(ms('p99_us'), '{:.2f}'):>9}{fmt(ms('p99.9_us'), '{:.2f}'):>10}"
              f"{fmt(m('errors')):>8}{fmt(m('cpu_s_per_100k'), '{:.2f}'):>12}")
        r = {metric: grant_ratio(runs, section, metric)
             for metric in ("rps", "p50_us", "p99_us", "p99.9_us", "cpu_s_per_100k")}
        cost = None if r["rps"] is None else 1.0 - r["rps"]
        w(f"{label:<18}{'granted / open':<17}{fmt(r['rps'], '{:.3f}'):>8}"
          f"{fmt(r['p50_us'], '{:.2f}'):>9}{fmt(r['p99_us'], '{:.2f}'):>9}"
          f"{fmt(r['p99.9_us'], '{:.2f}'):>10}{'':>8}{fmt(r['cpu_s_per_100k'], '{:.2f}'):>12}"
          f"   (req/s cost {fmt(cost, '{:+.1%}')})")
    w("")
    if not any(("grant-sse", t) in run for run in runs for t in GRANT_TARGETS):
        return
    w("What a grant costs per SSE event (µs): POST tools/list through keyward, answered by a")
    w("stream of JSON-RPC notifications; the granted client's stream is parsed event by event")
    hdr = f"{'client':<18}{'events':>8}{'median':>10}{'p90':>10}{'p99':>10}"
    w(hdr)
    w("-" * len(hdr))
    for target in GRANT_TARGETS:
        m = lambda metric: median_of(runs, get("grant-sse", target, metric))
        w(f"{target:<18}{fmt(m('events')):>8}{fmt(m('median_us'), '{:.1f}'):>10}"
          f"{fmt(m('p90_us'), '{:.1f}'):>10}{fmt(m('p99_us'), '{:.1f}'):>10}")
    diff = lambda metric: median_of(
        runs, lambda run: run[("grant-sse", "keyward-granted")][metric]
        - run[("grant-sse", "keyward-open")][metric])
    w(f"{'granted - open':<18}{'':>8}{fmt(diff('median_us'), '{:+.1f}'):>10}"
      f"{fmt(diff('p90_us'), '{:+.1f}'):>10}{fmt(diff('p99_us'), '{:+.1f}'):>10}")
    w("")


def main():
    if len(sys.argv) < 3 or sys.argv[1] not in ("record", "table"):
        print(__doc__)
        return 2
    if sys.argv[1] == "record":
        return record(sys.argv[2:])
    return table(sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())
