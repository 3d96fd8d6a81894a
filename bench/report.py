#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""report.py - turn the outputs of kstls_bench (the "KB:" lines of guest runs, one output per
platform) into the benchmark's results: raw.csv (every sample), summary.csv (median, p10, p90
per platform, path, threads, modules), breakdown.csv (the strict path's steps), table.md (the
Markdown report: the targets of every platform, then a section per platform) and scaling.png
(the scaling runs); and from the "KB:fork_" lines of bench/fork_cost, when an output has
them, fork.csv and fork_raw.csv (a victim's fork + waitpid while another user forks from a
process of 0, 1 and N contexts) and a section of table.md.

    report.py OUT_DIR GUEST_OUTPUT [GUEST_OUTPUT...] [--command CMD] [--host-cpu MODEL]
              [--qemu VERSION] [--fork-platform NAME] [--no-plot]

--fork-platform NAME: that platform's output must have a complete fork_cost run (bench.sh
passes qemu-prod, whose guest runs it after the syscall set).

Each output says on its KB:env lines which platform ran it (kstls_bench --platform) and which
sets of paths (--set): uml judges the user set's targets, qemu-prod the syscall set's; any other
platform (qemu-debug: the demo's debug kernel) is reported without judging.

It fails (exit 1), saying why, when a run is broken: the benchmark reported an error or did not
end, a sample is missing or not a positive number, an expected row of the output's set is
absent, two outputs name the same platform, a fork_cost run that reported an error, did not
end or lacks a sample. Timings never make it fail: a missed target is a
**no** in table.md, with where the time goes beside it.
"""
import argparse
import csv
import datetime
import math
import os
import statistics
import sys

SETS = ("user", "syscall")
# summary.csv and the results tables, per set.
SUMMARY = {
    "user": ["empty", "fs_le", "ie", "glibc_gd", "glibc_tlsdesc_return",
             "glibc_tlsdesc_dynamic", "kstls_cached", "kstls_ref", "kstls_gd", "kstls_tlsdesc"],
    "syscall": ["empty", "null_ioctl", "kstls_strict", "glibc_first_touch",
                "kstls_first_touch"],
}
USER_MAIN = ["empty", "fs_le", "ie", "glibc_gd", "glibc_tlsdesc_return", "glibc_tlsdesc_dynamic",
             "kstls_cached"]
BREAKDOWN = ["getuid", "null_ioctl", "strict_badmod", "strict_badoff", "kstls_strict"]
BREAKDOWN_STEP = {
    "getuid": "syscall entry and exit (a syscall that does nothing)",
    "null_ioctl": "+ fdget, vfs_ioctl, misc device, kstls ioctl dispatch (ENOTTY)",
    "strict_badmod": "+ 16-byte copy-in, owner check, context mutex, registry lookup (miss)",
    "strict_badoff": "+ registry hit, offset check (EINVAL)",
    "kstls_strict": "+ thread-table lookup, counters, 8-byte copy-out: the whole strict path",
}
PRIMS = {
    "getppid": "getppid syscall: getuid + an RCU read-side section",
    "kmod_nop": "ioctl of a C misc device that does nothing",
    "kmod_copy_in16": "+ copy_from_user of 16 bytes",
    "kmod_copy_out8": "+ put_user of 8 bytes",
    "kmod_mutex": "+ mutex_lock/mutex_unlock",
    "kmod_spinlock": "+ spin_lock/spin_unlock",
    "kmod_rcu": "+ rcu_read_lock/rcu_read_unlock",
    "kmod_skeleton": "+ copy-in 16, mutex, put_user 8: GET_ADDR without its lookups",
}
IMPLS = {
    "kstls_gd": "libkstls, a compiler-generated general-dynamic access in a module that"
                " registered itself (kstls_register_self rewrote its GOT; its own copy of"
                " libkstls)",
    "kstls_tlsdesc": "libkstls's TLS descriptor resolver kstls_tlsdesc, a compiler-generated"
                     " gnu2 access in a module registered by linking libkstls.a (the like-for-like"
                     " of glibc_tlsdesc_dynamic and glibc_tlsdesc_return)",
    "kstls_ref": "the reference C lookup of selftests/kstls_cache.h, on a context of its own",
}
FAST = ["kstls_cached", "kstls_gd", "kstls_ref", "kstls_tlsdesc"]
# Rows of the scaling table and plot, per set (the syscall set's empty shows the drift).
SCALED = {"user": ["glibc_gd", "kstls_cached", "fs_le"], "syscall": ["kstls_strict", "empty"]}
PLOTTED = {"user": ["glibc_gd", "kstls_cached", "fs_le"], "syscall": ["kstls_strict"]}
THREAD_PATHS = {"user": ["empty", "fs_le", "glibc_gd", "kstls_cached"],
                "syscall": ["empty", "kstls_strict"]}
SUMMARY_HEADER = ["platform", "path", "threads", "modules", "ns_median", "ns_p10", "ns_p90"]
RAW_HEADER = ["path", "threads", "modules", "repeat", "ns_per_op", "iters", "misses"]

# What each platform is, and which set's targets it judges.
def qemu_virt(a, env):
    """The virtualisation line of a QEMU platform."""
    return 'QEMU %s, TCG (no KVM), -cpu max -smp 2; guest CPU "%s", %s CPUs' % (
        a.qemu or "?", env.get("guest_cpu", "?"), env.get("guest_cpus", "?"))


PLATFORMS = {
    "uml": dict(
        judges="user",
        method="User-Mode Linux, x86-64 ARCH=um, user code runs natively on the host CPU; a"
               " system call costs ~17 µs (seccomp mode), so only user-side rows are measured"
               " here.",
        virt=lambda a, env: "User-Mode Linux (ARCH=um, x86-64), no emulator; CPU \"%s\", %s CPUs"
                            % (env.get("guest_cpu", "?"), env.get("guest_cpus", "?")),
        kernel="User-Mode Linux",
        caveat="User code ran natively on a host CPU shared with other builds: absolute numbers"
               " are that machine's, and only ratios within this platform's run mean anything."
               " Syscall costs are UML's own and are not measured here."),
    "qemu-prod": dict(
        judges="syscall",
        method="QEMU TCG, production-config kernel (no lockdep, kmemleak, SLUB debug, DEBUG_VM,"
               " fault injection): the syscall rows; user code is emulated, so user-side rows"
               " are not judged here.",
        virt=qemu_virt,
        kernel="production config",
        caveat="Absolute numbers come from TCG emulation on a machine shared with other builds:"
               " they are not hardware numbers. Only ratios within this platform's run mean"
               " anything."),
    "qemu-debug": dict(
        judges=None,
        method="QEMU TCG with the project's debug test kernel (lockdep, DEBUG_MUTEXES, SLUB"
               " debug, kmemleak): a run that proves every path works. The debug options"
               " dominate the syscall rows and user code is emulated, so no target is judged"
               " here (scripts/bench.sh judges them on uml and qemu-prod).",
        virt=qemu_virt,
        kernel="debug: lockdep, DEBUG_MUTEXES, SLUB debug, kmemleak",
        caveat="Absolute numbers come from a debug kernel under TCG emulation on a machine shared"
               " with other builds: they are not hardware numbers."),
}
OTHER_PLATFORM = dict(
    judges=None,
    method="A platform kstls_bench was not told the name of (--platform): its rows are"
           " reported, no target is judged.",
    virt=lambda a, env: "guest CPU \"%s\", %s CPUs" % (env.get("guest_cpu", "?"),
                                                     env.get("guest_cpus", "?")),
    kernel="?",
    caveat="Only ratios within this run mean anything.")
JUDGED_ON = {"user": "uml", "syscall": "qemu-prod"}


class Broken(Exception):
    pass


def percentile(xs, q):
    """Linear interpolation between closest ranks (numpy's default)."""
    xs = sorted(xs)
    pos = (len(xs) - 1) * q
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def parse(lines, name):
    """The runs of kstls_bench in one output, one after the other (scripts/bench.sh runs it in
    several processes, i.e. address-space layouts): their samples are pooled, the repeat numbers
    of run i offset by i * repeats; env["runs"] says how many ended. Every run of one output
    must be of the same platform and set."""
    env, raw, errors, rc, runs = {}, [], [], None, 0
    for line in lines:
        line = line.rstrip("\r\n")
        if not line.startswith("KB:"):
            continue
        kind, _, rest = line[3:].partition(":")
        if kind == "env":
            key, _, value = rest.partition("=")
            if key in ("platform", "set", "threads", "modules") and env.get(key, value) != value:
                raise Broken("%s: runs of different %s (%s, %s) in one output"
                             % (name, key, env[key], value))
            env[key] = value
        elif kind == "raw":
            f = rest.split(",")
            if len(f) != len(RAW_HEADER):
                raise Broken(f"{name}: malformed sample line: {line}")
            try:
                row = dict(path=f[0], threads=int(f[1]), modules=int(f[2]),
                           repeat=runs * int(env.get("repeats", 0)) + int(f[3]),
                           ns=float(f[4]), iters=int(f[5]), misses=int(f[6]))
            except ValueError:
                raise Broken(f"{name}: malformed sample line: {line}")
            if not (math.isfinite(row["ns"]) and row["ns"] > 0 and row["iters"] > 0):
                raise Broken(f"{name}: not a positive time: {line}")
            raw.append(row)
        elif kind == "slot":
            f = rest.split(",")
            if len(f) != 2:
                raise Broken(f"{name}: malformed slot line: {line}")
            slots = env.setdefault("slot_distance", {})
            slots.setdefault(int(f[0]), []).append(f[1])
        elif kind == "error":
            errors.append(rest)
        elif kind == "end":
            rc = rest
            runs += 1
            if rc != "rc=0":
                break
    env["runs"] = str(runs)
    if errors:
        raise Broken("%s: the benchmark reported errors:\n  %s" % (name, "\n  ".join(errors)))
    if rc is None:
        raise Broken(f"{name}: the benchmark did not end (no KB:end line): crashed or timed out")
    if rc != "rc=0":
        raise Broken(f"{name}: the benchmark ended with {rc}")
    for key in ("platform", "set", "repeats", "threads", "modules", "sample_ms"):
        if key not in env:
            raise Broken(f"{name}: no KB:env:{key} line")
    sets = env["set"].split()
    if not sets or any(s not in SETS for s in sets):
        raise Broken(f"{name}: unknown set {env['set']!r}")
    return env, raw


FORK_SUMMARY_HEADER = ["platform", "contexts", "ns_median", "ns_p10", "ns_p90", "ns_mean", "paired_x0",
                       "medians_x0", "holder_forks_per_s"]
FORK_RAW_HEADER = ["platform", "contexts", "repeat", "op", "ns", "holder_forks", "elapsed_ns"]


def parse_fork(lines, name):
    """The run of bench/fork_cost in one output (its "KB:fork_" lines), or None when it has
    none: dict(env, samples={(contexts, repeat): dict(forks, elapsed, ns=[...])})."""
    env, samples, errors, ends, seen = {}, {}, [], [], False
    for line in lines:
        line = line.rstrip("\r\n")
        if not line.startswith("KB:fork_"):
            continue
        seen = True
        kind, _, rest = line[len("KB:fork_"):].partition(":")
        if kind == "env":
            key, _, value = rest.partition("=")
            env[key] = value
        elif kind == "raw":
            head = rest.split(",")
            try:
                if len(head) != 5:
                    raise ValueError
                key = (int(head[0]), int(head[1]))
                sample = dict(forks=int(head[2]), elapsed=int(head[3]),
                              ns=[int(x) for x in head[4].split()])
            except ValueError:
                raise Broken(f"{name}: malformed fork sample line: {line}")
            if key in samples:
                raise Broken(f"{name}: fork sample contexts=%d repeat=%d twice" % key)
            if sample["elapsed"] <= 0 or sample["forks"] < 0 or not sample["ns"] \
                    or any(x <= 0 for x in sample["ns"]):
                raise Broken(f"{name}: not a positive time: {line}")
            samples[key] = sample
        elif kind == "error":
            errors.append(rest)
        elif kind == "end":
            ends.append(rest)
    if not seen:
        return None
    if errors:
        raise Broken("%s: fork_cost reported errors:\n  %s" % (name, "\n  ".join(errors)))
    if not ends:
        raise Broken(f"{name}: fork_cost did not end (no KB:fork_end line): crashed or timed out")
    if ends != ["rc=0"]:
        raise Broken(f"{name}: fork_cost ended with {', '.join(ends)} (one run with rc=0 expected)")
    for key in ("contexts", "repeats", "ops"):
        if key not in env:
            raise Broken(f"{name}: no KB:fork_env:{key} line")
    try:
        contexts = [int(x) for x in env["contexts"].split()]
        repeats, ops = int(env["repeats"]), int(env["ops"])
    except ValueError:
        raise Broken(f"{name}: malformed KB:fork_env lines")
    if len(contexts) < 2 or contexts[0] != 0:
        raise Broken(f"{name}: fork_cost phases {env['contexts']!r}: the first must be 0")
    want = {(c, r) for c in contexts for r in range(repeats)}
    missing = sorted(want - set(samples))
    if missing:
        raise Broken("%s: fork samples missing: %s" % (
            name, ", ".join("contexts=%d repeat=%d" % k for k in missing)))
    extra = sorted(set(samples) - want)
    if extra:
        raise Broken("%s: fork samples of no phase: %s" % (
            name, ", ".join("contexts=%d repeat=%d" % k for k in extra)))
    short = [k for k in sorted(samples) if len(samples[k]["ns"]) != ops]
    if short:
        raise Broken("%s: fork samples without %d operations: %s" % (
            name, ops, ", ".join("contexts=%d repeat=%d" % k for k in short)))
    return dict(env=env, contexts=contexts, repeats=repeats, ops=ops, samples=samples)


class Fork:
    """A fork_cost run: per phase (contexts held by the other user), the victim's fork + waitpid
    over every operation of every repeat, and its ratio to phase 0, paired by repeat."""

    def __init__(self, run):
        self.__dict__.update(run)
        self.stats = {}
        for c in self.contexts:
            ns = [x for r in range(self.repeats) for x in self.samples[(c, r)]["ns"]]
            per = {r: statistics.median(self.samples[(c, r)]["ns"]) for r in range(self.repeats)}
            forks = sum(self.samples[(c, r)]["forks"] for r in range(self.repeats))
            elapsed = sum(self.samples[(c, r)]["elapsed"] for r in range(self.repeats))
            self.stats[c] = dict(median=statistics.median(ns), p10=percentile(ns, 0.1),
                                 p90=percentile(ns, 0.9), mean=statistics.fmean(ns),
                                 by_repeat=per,
                                 forks_per_s=forks * 1e9 / elapsed)
        base = self.stats[0]
        for c in self.contexts:
            s = self.stats[c]
            s["paired_x0"] = statistics.median(s["by_repeat"][r] / base["by_repeat"][r]
                                               for r in range(self.repeats))
            s["medians_x0"] = s["median"] / base["median"]

    @property
    def big(self):
        return self.contexts[-1]


def processes(env):
    return "1 process" if env["runs"] == "1" else "%s processes" % env["runs"]


def expected_rows(sets, threads, modules):
    """The rows kstls_bench prints for these sets, in its order (no duplicates)."""
    rows = [("empty", 1, 1)]
    if "user" in sets:
        rows += [(p, 1, 1) for p in ["fs_le", "ie", "glibc_tlsdesc_return",
                                     "glibc_tlsdesc_dynamic"]]
        rows += [(p, 1, m) for m in modules for p in ["glibc_gd", "kstls_cached"]]
        rows += [(p, 1, 1) for p in IMPLS]
    if "syscall" in sets:
        rows += [("null_ioctl", 1, 1)]
        rows += [("kstls_strict", 1, m) for m in modules]
        rows += [(p, 1, 1) for p in ["getuid", "strict_badmod", "strict_badoff"] + list(PRIMS)]
        rows += [(p, 1, modules[-1]) for p in ["glibc_first_touch", "kstls_first_touch"]]
    for t in threads:
        if t > 1:
            rows += [(p, t, 1) for s in SETS if s in sets for p in THREAD_PATHS[s]]
    seen, out = set(), []
    for k in rows:
        if k not in seen:
            seen.add(k)
            out.append(k)
    return out


class Platform:
    """One guest output: a platform, its sets, its rows and their statistics."""

    def __init__(self, name, env, raw, fork=None):
        self.file, self.env, self.raw = name, env, raw
        self.fork = Fork(fork) if fork else None
        self.name = env["platform"]
        self.sets = [s for s in SETS if s in env["set"].split()]
        self.info = PLATFORMS.get(self.name, OTHER_PLATFORM)
        self.threads = [int(x) for x in env["threads"].split()]
        self.modules = [int(x) for x in env["modules"].split()]
        self.rows = expected_rows(self.sets, self.threads, self.modules)
        self.summarize()

    def summarize(self):
        repeats = int(self.env["repeats"]) * int(self.env["runs"])
        groups = {}
        for r in self.raw:
            groups.setdefault((r["path"], r["threads"], r["modules"]), []).append(r)
        missing = [k for k in self.rows if k not in groups]
        if missing:
            raise Broken("%s (platform %s, set %s): rows missing from the run: %s"
                         % (self.file, self.name, " ".join(self.sets),
                            ", ".join("%s/%d/%d" % k for k in missing)))
        self.stats = {}
        for key in self.rows:
            samples = groups[key]
            if sorted(s["repeat"] for s in samples) != list(range(repeats)):
                raise Broken("%s: %s/%d/%d: %d samples, expected repeats 0..%d"
                             % ((self.file,) + key + (len(samples), repeats - 1)))
            ns = [s["ns"] for s in samples]
            self.stats[key] = dict(median=statistics.median(ns), p10=percentile(ns, 0.1),
                                   p90=percentile(ns, 0.9),
                                   misses=sum(s["misses"] for s in samples),
                                   iters=samples[0]["iters"],
                                   by_repeat={s["repeat"]: s["ns"] for s in samples})
        self.med = {k: s["median"] for k, s in self.stats.items()}

    def summary_paths(self):
        return [p for s in self.sets for p in SUMMARY[s]]

    def judges(self, set_name):
        return self.info["judges"] == set_name


def write_csvs(out, platforms):
    with open(os.path.join(out, "raw.csv"), "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["platform"] + RAW_HEADER)
        for p in platforms:
            for r in p.raw:
                w.writerow([p.name, r["path"], r["threads"], r["modules"], r["repeat"],
                            "%.3f" % r["ns"], r["iters"], r["misses"]])
    for name, keep in (("summary.csv", lambda p, k: k[0] in p.summary_paths()),
                       ("breakdown.csv",
                        lambda p, k: (k[0] in BREAKDOWN or k[0] in PRIMS) and k[1:] == (1, 1))):
        with open(os.path.join(out, name), "w", newline="") as f:
            w = csv.writer(f, lineterminator="\n")
            w.writerow(SUMMARY_HEADER)
            for p in platforms:
                for k in p.rows:
                    if keep(p, k):
                        s = p.stats[k]
                        w.writerow([p.name] + list(k) + ["%.3f" % s["median"], "%.3f" % s["p10"],
                                                         "%.3f" % s["p90"]])
    forks = [p for p in platforms if p.fork]
    if not forks:
        return
    with open(os.path.join(out, "fork.csv"), "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(FORK_SUMMARY_HEADER)
        for p in forks:
            for c in p.fork.contexts:
                s = p.fork.stats[c]
                w.writerow([p.name, c] + ["%.0f" % s[k] for k in ("median", "p10", "p90", "mean")]
                           + ["%.3f" % s["paired_x0"], "%.3f" % s["medians_x0"],
                              "%.2f" % s["forks_per_s"]])
    with open(os.path.join(out, "fork_raw.csv"), "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(FORK_RAW_HEADER)
        for p in forks:
            for (c, r), smp in sorted(p.fork.samples.items()):
                for i, ns in enumerate(smp["ns"]):
                    w.writerow([p.name, c, r, i, ns, smp["forks"], smp["elapsed"]])


def check_summary(out, platforms):
    """Reads summary.csv back: the exact header, known platforms and paths, numbers."""
    with open(os.path.join(out, "summary.csv"), newline="") as f:
        rows = list(csv.reader(f))
    if not rows or rows[0] != SUMMARY_HEADER:
        raise Broken("summary.csv: wrong header %r" % (rows[:1],))
    by_name = {p.name: p for p in platforms}
    found = {}
    for r in rows[1:]:
        if len(r) != len(SUMMARY_HEADER) or r[0] not in by_name \
                or r[1] not in by_name[r[0]].summary_paths():
            raise Broken("summary.csv: bad row %r" % (r,))
        int(r[2]), int(r[3])
        if not all(math.isfinite(float(x)) and float(x) > 0 for x in r[4:]):
            raise Broken("summary.csv: bad numbers %r" % (r,))
        found.setdefault(r[0], set()).add(r[1])
    for p in platforms:
        lost = set(p.summary_paths()) - found.get(p.name, set())
        if lost:
            raise Broken("summary.csv: %s: paths missing: %s" % (p.name, ", ".join(sorted(lost))))


def fmt(x):
    return "%.0f" % x if abs(x) >= 100 else "%.1f" % x


def paired(stats, a, b):
    """The median over repeats of a's sample divided by b's sample of the same repeat: both were
    taken in one round-robin pass of their phase, tens of milliseconds apart, in one process, so
    the host's state and the process's layout are mostly the same for the two and cancel."""
    ra, rb = stats[a]["by_repeat"], stats[b]["by_repeat"]
    return statistics.median(ra[r] / rb[r] for r in ra)


def ratio(a, b):
    return "%.2f" % (a / b) if b else "-"


def targets(p):
    """The targets of p's sets: dicts of measure, medians (ratio of medians), paired (or None),
    limit, why (the kind of breakdown a miss gets), info (never judged), set."""
    st, med, out = p.stats, p.med, []

    def add(set_name, measure, a, b, limit, why, info=False, medians=None, pv=None):
        out.append(dict(set=set_name, measure=measure, limit=limit, why=why, info=info,
                        medians=medians if medians is not None else med[a] / med[b],
                        paired=pv if medians is not None else paired(st, a, b)))

    if "user" in p.sets:
        k1, f1, g1 = ("kstls_cached", 1, 1), ("fs_le", 1, 1), ("glibc_gd", 1, 1)
        kg = ("kstls_gd", 1, 1)
        add("user", "kstls_cached / glibc_gd", k1, g1, 1.0, "fast")
        add("user", "kstls_gd / glibc_gd (both a compiler-generated GD access in a DSO)", kg, g1,
            1.0, "fast")
        add("user", "kstls_cached / fs_le", k1, f1, 2.5, "fast")
        add("user", "kstls_gd / fs_le", kg, f1, 2.5, "fast")
        # Each thread count is a phase of its own: dividing by that phase's fs_le takes out
        # the machine's drift between phases (the modules are interleaved in one phase).
        base = med[k1]
        add("user", "kstls_cached, worst of threads %d to %d / 1 thread, each phase over its own"
            " fs_le" % (p.threads[0], p.threads[-1]), None, None, 1.1, "flat",
            medians=max((med[("kstls_cached", t, 1)] / med[("fs_le", t, 1)])
                        / (base / med[f1]) for t in p.threads),
            pv=max(paired(st, ("kstls_cached", t, 1), ("fs_le", t, 1)) / paired(st, k1, f1)
                   for t in p.threads))
        add("user", "kstls_cached, worst of modules %d to %d / 1 module"
            % (p.modules[0], p.modules[-1]), None, None, 1.1, "flat",
            medians=max(med[("kstls_cached", 1, m)] / base for m in p.modules),
            pv=max(paired(st, ("kstls_cached", 1, m), k1) for m in p.modules))
        add("user", "kstls_cached, worst thread count / 1 thread, drift not taken out", None,
            None, 1.1, "flat", info=True,
            medians=max(med[("kstls_cached", t, 1)] / base for t in p.threads))
        add("user", "kstls_tlsdesc / glibc_tlsdesc_dynamic (both a gnu2 access in a DSO with a"
            " dynamic block)", ("kstls_tlsdesc", 1, 1), ("glibc_tlsdesc_dynamic", 1, 1), 1.0,
            "fast", info=True)
    if "syscall" in p.sets:
        maxm = p.modules[-1]
        add("syscall", "kstls_strict / null_ioctl", ("kstls_strict", 1, 1), ("null_ioctl", 1, 1),
            1.15, "strict")
        add("syscall", "kstls_first_touch / glibc_first_touch (per module, %d modules)" % maxm,
            ("kstls_first_touch", 1, maxm), ("glibc_first_touch", 1, maxm), 3.0, "first_touch")
    if p.fork:
        s = p.fork.stats[p.fork.big]
        add("syscall", "fork + waitpid of a process without a context, another user's process"
            " of %d contexts forking / of none (fork_cost)" % p.fork.big, None, None, 1.0,
            "fork", info=True, medians=s["medians_x0"], pv=s["paired_x0"])
    for t in out:
        t["judged"] = p.judges(t["set"]) and not t["info"]
        v = t["paired"] if t["paired"] is not None else t["medians"]
        t["value"] = v
        t["met"] = v <= t["limit"]
        t["verdict"] = ("yes" if t["met"] else "**no**") if t["judged"] else \
            "info" if t["info"] else "not judged here (%s judges it)" % JUDGED_ON[t["set"]]
    return out


def ratio_cell(t):
    if t["paired"] is None:
        return "%.2f (of medians)" % t["medians"]
    return "%.2f paired (%.2f of medians)" % (t["paired"], t["medians"])


def combined_targets(platforms, tables):
    out = ["## Targets\n",
           "Every platform's targets, judged on the platform that can time them (uml: the"
           " user-side paths; qemu-prod: the syscall paths), by the paired estimate where there"
           " is one, the ratio of medians beside it. The sections below say how each was"
           " measured and, for a missed target, where the time goes.\n",
           "| platform | measure | target | ratio | met |", "|---|---|---:|---:|---|"]
    for p in platforms:
        for t in tables[p.name]:
            out.append("| %s | %s | <= %.2fx | %s | %s |" % (p.name, t["measure"], t["limit"],
                                                            ratio_cell(t), t["verdict"]))
    out.append("")
    return out


def section(p, tgts, args):
    st, med = p.stats, p.med
    maxm = p.modules[-1]
    out = []
    w = out.append
    w("## Platform: %s (set: %s)\n" % (p.name, ", ".join(p.sets)))
    w(p.info["method"] + "\n")
    w("ns per access: median of %d samples and p10/p90 (%s of %s samples each, every process a"
      " new address-space layout; each sample about %s ms of one path, paths interleaved).\n"
      % (int(p.env["repeats"]) * int(p.env["runs"]), processes(p.env), p.env["repeats"],
         p.env["sample_ms"]))

    if "user" in p.sets:
        w("### User-side paths\n")
        w("**x glibc** is the ratio of medians to `glibc_gd` at the same threads/modules;"
          " **x fs_le** to `fs_le` at the same thread count.\n")
        w("| path | threads | modules | median | p10 | p90 | x glibc | x fs_le |")
        w("|---|---:|---:|---:|---:|---:|---:|---:|")
        for k in p.rows:
            if k[0] not in USER_MAIN:
                continue
            path, t, m = k
            s = st[k]
            w("| %s | %d | %d | %s | %s | %s | %s | %s |" % (
                path, t, m, fmt(s["median"]), fmt(s["p10"]), fmt(s["p90"]),
                ratio(s["median"], med[("glibc_gd", t, m)]),
                ratio(s["median"], med[("fs_le", t, 1)])))
        w("")
        w("Other kstls fast paths, one thread, one module (`kstls_cached` above is libkstls's"
          " `__tls_get_addr` called with a `tls_index` that holds a kstls id):\n")
        w("| path | median | p10 | p90 | x glibc | x fs_le |")
        w("|---|---:|---:|---:|---:|---:|")
        for path, what in IMPLS.items():
            s = st[(path, 1, 1)]
            w("| %s: %s | %s | %s | %s | %s | %s |" % (
                path, what, fmt(s["median"]), fmt(s["p10"]), fmt(s["p90"]),
                ratio(s["median"], med[("glibc_gd", 1, 1)]),
                ratio(s["median"], med[("fs_le", 1, 1)])))
        w("")

    if "syscall" in p.sets:
        w("### Syscall paths\n")
        w("**x null_ioctl** is the ratio of medians to the one-thread `null_ioctl`;"
          " **x glibc first touch** that of `kstls_first_touch` to `glibc_first_touch`.\n")
        w("| path | threads | modules | median | p10 | p90 | x null_ioctl | x glibc first touch |")
        w("|---|---:|---:|---:|---:|---:|---:|---:|")
        for k in p.rows:
            if k[0] not in SUMMARY["syscall"] or ("user" in p.sets and k[0] == "empty"):
                continue
            path, t, m = k
            s = st[k]
            w("| %s | %d | %d | %s | %s | %s | %s | %s |" % (
                path, t, m, fmt(s["median"]), fmt(s["p10"]), fmt(s["p90"]),
                ratio(s["median"], med[("null_ioctl", 1, 1)]),
                ratio(s["median"], med[("glibc_first_touch", 1, maxm)])
                if path == "kstls_first_touch" else "-"))
        w("")
        w("First touch: a new thread times its first access to each of %d modules (a miss and a"
          " block allocation each) and divides by %d; thread creation is not included.\n"
          % (maxm, maxm))

    w("### Scaling (median relative to 1 thread, 1 module)\n")
    cols = ["threads=%d" % t for t in p.threads] + ["modules=%d" % m for m in p.modules[1:]]
    w("| path | " + " | ".join(cols) + " |")
    w("|---|" + "---:|" * len(cols))
    for s in p.sets:
        for path in SCALED[s]:
            base = med[(path, 1, 1)]
            cells = [ratio(med[(path, t, 1)], base) for t in p.threads]
            cells += [ratio(med[(path, 1, m)], base) if (path, 1, m) in med else "-"
                      for m in p.modules[1:]]
            w("| %s | %s |" % (path, " | ".join(cells)))
    w("")
    w("Each thread count is a phase of its own (main thread + parked threads + a measuring"
      " thread); `%s` measured in the same phase shows how much the machine itself drifted"
      " between phases. Module counts are interleaved in one phase; each access goes to the"
      " next of the N modules in turn.\n" % ("fs_le" if "user" in p.sets else "empty"))

    if "syscall" in p.sets:
        w("### Where the strict path's time goes\n")
        w("| step | median | p10 | p90 | + over the step before | x null_ioctl |")
        w("|---|---:|---:|---:|---:|---:|")
        prev = None
        for path in BREAKDOWN:
            s = st[(path, 1, 1)]
            delta = fmt(s["median"] - prev) if prev is not None else "-"
            w("| %s: %s | %s | %s | %s | %s | %s |" % (
                path, BREAKDOWN_STEP[path], fmt(s["median"]), fmt(s["p10"]), fmt(s["p90"]),
                delta, ratio(s["median"], med[("null_ioctl", 1, 1)])))
            prev = s["median"]
        w("")
        w("The kernel primitives on this kernel, each timed as one ioctl of the benchmark-only"
          " device bench/kmod (C), minus its do-nothing ioctl:\n")
        w("| primitive | median | p10 | p90 | - kmod_nop |")
        w("|---|---:|---:|---:|---:|")
        nop = med[("kmod_nop", 1, 1)]
        for path, what in PRIMS.items():
            s = st[(path, 1, 1)]
            base = med[("getuid", 1, 1)] if path == "getppid" else nop
            w("| %s: %s | %s | %s | %s | %s |" % (
                path, what, fmt(s["median"]), fmt(s["p10"]), fmt(s["p90"]),
                "-" if path == "kmod_nop"
                else fmt(s["median"] - base) + (" (- getuid)" if path == "getppid" else "")))
        w("")

    if p.fork:
        out += fork_section(p)

    w("### Targets on %s\n" % p.name)
    w("Two estimates of each ratio: of the medians, and the median of the ratios of samples"
      " paired by repeat (the two paths measured in the same round-robin pass of one process,"
      " so the host's drift and the process's layout cancel%s). A target is met when the"
      " estimate it can be judged by, the paired one where there is one, meets it.\n"
      % ("; thread counts are phases of their own, which only the fs_le-relative row can pair"
         if "user" in p.sets else ""))
    w("| ratio | of medians | paired | target | met |")
    w("|---|---:|---:|---:|---|")
    for t in tgts:
        w("| %s | %.2f | %s | <= %.2f | %s |" % (
            t["measure"], t["medians"], "-" if t["paired"] is None else "%.2f" % t["paired"],
            t["limit"], t["verdict"]))
    w("")
    if "user" in p.sets:
        missed = [k for k in p.rows if k[0] in FAST and st[k]["misses"]]
        if missed:
            w("**Warning:** the fast path was left during measured samples: " + ", ".join(
                "%s threads=%d modules=%d (%d slow calls)" % (k[0], k[1], k[2], st[k]["misses"])
                for k in missed) + ".\n")
        else:
            w("Every measured access of the kstls fast paths was a cache hit: the slow path was"
              " never taken outside warm-up (counted by each library's GET_ADDR calls).\n")

    out += missed_breakdowns(p, [t for t in tgts if t["judged"] and not t["met"]])

    w("### Environment (%s)\n" % p.name)
    env = p.env
    info = [
        ("output", "`%s`" % p.file),
        ("virtualisation", p.info["virt"](args, env)),
        ("guest kernel", "%s (%s)" % (env.get("kernel", "?"), p.info["kernel"])),
        ("clocksource", env.get("clocksource", "?")),
        ("pinned", "guest CPU %s (sched_setaffinity, every thread)" % env.get("pinned_cpu")),
        ("samples", "%s (address-space layouts) x %s repeats x every path, round-robin,"
         " ~%s ms each, after calibration and one warm-up sample per path"
         % (processes(env), env["repeats"], env["sample_ms"])),
        ("compiler", "%s, %s" % (env.get("compiler", "?"), env.get("cflags", "?"))),
        ("libc", "glibc %s; glibc_gd module block: %s" % (env.get("glibc", "?"),
                                                         env.get("glibc_gd_block", "?"))
         + ("" if "user" not in p.sets else
            ", glibc_tlsdesc_return module block: %s, glibc_tlsdesc_dynamic module block: %s"
            % (env.get("tlsdesc_block", "?"), env.get("tlsdesc_dyn_block", "?")))),
        ("kstls_cached", env.get("kstls_cached_impl", "?")),
        ("kstls cache", env.get("kstls_cache", "?")),
    ]
    if "user" in p.sets:
        info.append(("kstls_cached measuring thread's slot, per process (0: its home slot; k: k"
                     " probes further on every access; -1: not cached)", slots(env) or "-"))
    for k, v in info:
        w("- %s: %s" % (k, v))
    w("")
    w(p.info["caveat"] + "\n")
    return out


def fork_section(p):
    """The fork_cost table: the victim's fork + waitpid per phase, and the ratios to phase 0."""
    fk, out = p.fork, []
    w = out.append
    env = fk.env
    w("### Fork latency of a process without a context (fork_cost)\n")
    w("A root process that never opened /dev/kstls times fork + waitpid of a child that exits at"
      " once, one operation at a time, while uid %s forks in a loop (children that exit at once)"
      " from a process that owns the phase's contexts, each with a module registered and one"
      " block touched (the fds parked in another process over SCM_RIGHTS). Phase 0 is the same"
      " loop without a context. ns per operation over %d repeats x %d operations; the phases"
      " are measured in turn within each repeat, the first rotating, so **x 0 paired** (the"
      " median over repeats of the repeat's median over phase 0's) has the machine's drift"
      " taken out. Pinned: %s.\n" % (env.get("other_uid", "?"), fk.repeats, fk.ops,
                                      env.get("pinned", "?")))
    w("| contexts of the other user | median | p10 | p90 | mean | x 0 paired | x 0 of medians |"
      " the other user's forks/s |")
    w("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for c in fk.contexts:
        s = fk.stats[c]
        w("| %d | %s | %s | %s | %s | %.2f | %.2f | %.1f |" % (
            c, fmt(s["median"]), fmt(s["p10"]), fmt(s["p90"]), fmt(s["mean"]), s["paired_x0"],
            s["medians_x0"], s["forks_per_s"]))
    w("")
    s = fk.stats[fk.big]
    w("**%d / 0 contexts**: %.2f paired (%.2f of medians); p90 %s ns against %s ns, mean %s"
      " against %s.\n" % (fk.big, s["paired_x0"], s["medians_x0"], fmt(s["p90"]),
                            fmt(fk.stats[0]["p90"]), fmt(s["mean"]), fmt(fk.stats[0]["mean"])))
    return out


def slots(env):
    return "; ".join("%d thread%s: %s" % (t, "" if t == 1 else "s", ", ".join(d))
                     for t, d in sorted(env.get("slot_distance", {}).items()))


def missed_breakdowns(p, missed):
    """Where the time goes, for each kind of target p missed."""
    st, med = p.stats, p.med
    maxm = p.modules[-1]
    kinds = []
    for t in missed:
        if t["why"] not in kinds:
            kinds.append(t["why"])
    out = []
    w = out.append
    for why in kinds:
        names = ", ".join("`%s`" % t["measure"] for t in missed if t["why"] == why)
        w("### Where the time goes: %s (missed)\n" % names)
        if why == "strict":
            steps = [(BREAKDOWN[i], med[(BREAKDOWN[i], 1, 1)] - med[(BREAKDOWN[i - 1], 1, 1)])
                     for i in range(1, len(BREAKDOWN))]
            big, ns = max(steps, key=lambda x: x[1])
            strict, null = med[("kstls_strict", 1, 1)], med[("null_ioctl", 1, 1)]
            w("kstls_strict costs %s ns, %s ns more than null_ioctl (the target allows %s): the"
              " steps are in \"Where the strict path's time goes\" above; the largest is %s"
              " (%s, +%s ns), and the kernel primitives beside it say what each part costs on"
              " this kernel.\n" % (fmt(strict), fmt(strict - null), fmt(0.15 * null), big,
                                   BREAKDOWN_STEP[big], fmt(ns)))
        elif why == "first_touch":
            ft = med[("kstls_first_touch", 1, maxm)]
            hit = med[("kstls_strict", 1, 1)]
            null = med[("null_ioctl", 1, 1)]
            g = med[("glibc_first_touch", 1, maxm)]
            w("A first touch is one GET_ADDR per module that misses the thread's table: the"
              " kernel allocates and initialises the block and fills the cache. Taking a strict"
              " hit away leaves what the allocation and initialisation cost on top of a lookup"
              " (the hit itself already holds the syscall and its dispatch, null_ioctl):\n")
            w("| part | ns per module |")
            w("|---|---:|")
            w("| kstls_first_touch: a first access, %d modules | %s |" % (maxm, fmt(ft)))
            w("| - kstls_strict: a GET_ADDR that hits | %s |" % fmt(hit))
            w("| = on top of a hit: libkstls's miss, the block's allocation and initialisation,"
              " the cache fill | %s |" % fmt(ft - hit))
            w("| the hit's syscall and ioctl dispatch (null_ioctl) | %s |" % fmt(null))
            w("| the hit's own work (kstls_strict - null_ioctl) | %s |" % fmt(hit - null))
            w("| glibc_first_touch, for comparison (target: %s) | %s |" % (fmt(3 * g), fmt(g)))
            w("")
        elif why == "fast":
            w("The fast paths against the baselines, paired by repeat (one thread, one module);"
              " ns over empty is the access itself without the call; slow calls count GET_ADDRs"
              " during measured samples (0 on the fast path):\n")
            w("| path | median | paired x fs_le | paired x empty | paired x glibc_gd |"
              " ns over empty | slow calls |")
            w("|---|---:|---:|---:|---:|---:|---:|")
            e, f, g = ("empty", 1, 1), ("fs_le", 1, 1), ("glibc_gd", 1, 1)
            for path in FAST + ["glibc_gd", "glibc_tlsdesc_dynamic", "ie", "fs_le"]:
                k = (path, 1, 1)
                w("| %s | %s | %.2f | %.2f | %.2f | %s | %s |" % (
                    path, fmt(med[k]), paired(st, k, f), paired(st, k, e), paired(st, k, g),
                    fmt(med[k] - med[e]), st[k]["misses"] if path in FAST else "-"))
            w("")
        elif why == "flat":
            w("kstls_cached per thread count (each a phase of its own, paired with that phase's"
              " fs_le and empty) and per module count (one phase, paired with 1 module):\n")
            w("| threads | modules | median | paired x fs_le | paired x empty | vs 1 thread/module"
              " (paired) | slow calls | slot distance |")
            w("|---:|---:|---:|---:|---:|---:|---:|---|")
            k1 = ("kstls_cached", 1, 1)
            base = paired(st, k1, ("fs_le", 1, 1))
            dist = p.env.get("slot_distance", {})
            for t in p.threads:
                k = ("kstls_cached", t, 1)
                pf = paired(st, k, ("fs_le", t, 1))
                w("| %d | 1 | %s | %.2f | %.2f | %.2f | %d | %s |" % (
                    t, fmt(med[k]), pf, paired(st, k, ("empty", t, 1)), pf / base,
                    st[k]["misses"], ", ".join(dist.get(t, [])) or "-"))
            for m in p.modules[1:]:
                k = ("kstls_cached", 1, m)
                w("| 1 | %d | %s | %.2f | %.2f | %.2f | %d | - |" % (
                    m, fmt(med[k]), paired(st, k, ("fs_le", 1, 1)),
                    paired(st, k, ("empty", 1, 1)), paired(st, k, k1), st[k]["misses"]))
            w("")
    return out


def report(platforms, args):
    tables = {p.name: targets(p) for p in platforms}
    out = ["# kstls benchmark\n"]
    out.append("- date: %s" % datetime.datetime.now(datetime.timezone.utc)
               .strftime("%Y-%m-%d %H:%M UTC"))
    out.append("- command: %s" % ("`%s`" % args.command if args.command else "-"))
    out.append("- host CPU: %s" % (args.host_cpu or "-"))
    out.append("- platforms: %s\n" % ", ".join("%s (set: %s)" % (p.name, ", ".join(p.sets))
                                               for p in platforms))
    out += combined_targets(platforms, tables)
    for p in platforms:
        out += section(p, tables[p.name], args)
    return "\n".join(out), tables


def plot(out, platforms):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise Broken("matplotlib is missing (Debian package python3-matplotlib)")
    n = len(platforms)
    fig, axes = plt.subplots(2 * n, 2, figsize=(11, 7 * n), squeeze=False)
    styles = {"glibc_gd": "o-", "kstls_cached": "s-", "kstls_strict": "^-", "fs_le": "x--"}
    for i, p in enumerate(platforms):
        paths = [x for s in p.sets for x in PLOTTED[s]]
        for col, (xs, key, label) in enumerate([
                (p.threads, lambda q, x: (q, x, 1), "threads (1 module)"),
                (p.modules, lambda q, x: (q, 1, x), "modules (1 thread)")]):
            top, bottom = axes[2 * i][col], axes[2 * i + 1][col]
            for q in paths:
                pts = [(x, p.stats[key(q, x)]) for x in xs if key(q, x) in p.stats]
                if len(pts) < 2:
                    continue
                x = [a for a, _ in pts]
                m = [s["median"] for _, s in pts]
                lo = [s["median"] - s["p10"] for _, s in pts]
                hi = [s["p90"] - s["median"] for _, s in pts]
                top.errorbar(x, m, yerr=[lo, hi], fmt=styles[q], capsize=3, label=q)
                base = p.stats[key(q, xs[0])]["median"]
                bottom.plot(x, [v / base for v in m], styles[q], label=q)
            top.set_xscale("log", base=2)
            top.set_yscale("log")
            top.set_ylabel("ns per access (median, p10-p90)")
            top.set_title("%s: vs %s" % (p.name, label))
            top.grid(True, which="both", alpha=0.3)
            top.legend(fontsize=8)
            bottom.axhline(1.1, color="red", linestyle=":", label="target 1.1x")
            bottom.set_xscale("log", base=2)
            bottom.set_xticks(xs)
            bottom.set_xticklabels([str(v) for v in xs])
            bottom.set_xlabel("%s: %s" % (p.name, label))
            bottom.set_ylabel("median / median at %s=1" % label.split()[0])
            bottom.grid(True, alpha=0.3)
            bottom.legend(fontsize=8)
    fig.suptitle("kstls benchmark: scaling per platform (%s; ratios only)"
                 % ", ".join(p.name for p in platforms))
    fig.tight_layout()
    fig.savefig(os.path.join(out, "scaling.png"), dpi=100)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out_dir")
    ap.add_argument("guest_outputs", nargs="+", metavar="guest_output")
    ap.add_argument("--command")
    ap.add_argument("--host-cpu")
    ap.add_argument("--qemu")
    ap.add_argument("--fork-platform", action="append", default=[])
    ap.add_argument("--no-plot", action="store_true")
    args = ap.parse_args(argv)
    try:
        platforms = []
        for name in args.guest_outputs:
            with open(name, errors="replace") as f:
                lines = f.readlines()
            env, raw = parse(lines, name)
            fork = parse_fork(lines, name)
            if fork and fork["env"].get("platform", env["platform"]) != env["platform"]:
                raise Broken("%s: fork_cost ran on %s, kstls_bench on %s" % (
                    name, fork["env"]["platform"], env["platform"]))
            p = Platform(name, env, raw, fork)
            if any(q.name == p.name for q in platforms):
                raise Broken("two outputs of platform %s: %s" % (p.name, name))
            platforms.append(p)
        for name in args.fork_platform:
            if not any(p.name == name and p.fork for p in platforms):
                raise Broken("no fork_cost run in the output of platform %s" % name)
        os.makedirs(args.out_dir, exist_ok=True)
        write_csvs(args.out_dir, platforms)
        check_summary(args.out_dir, platforms)
        md, _ = report(platforms, args)
        with open(os.path.join(args.out_dir, "table.md"), "w") as f:
            f.write(md)
        if not args.no_plot:
            plot(args.out_dir, platforms)
    except OSError as e:
        print("report.py: error: %s" % e, file=sys.stderr)
        return 1
    except (Broken, KeyError, ValueError) as e:
        print("report.py: error: %s" % (e if isinstance(e, Broken) else "bad output: %r" % e),
              file=sys.stderr)
        return 1
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
