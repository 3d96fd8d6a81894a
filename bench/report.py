#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""report.py - turn the output of kstls_bench (the "KB:" lines of a guest run) into the
benchmark's results: raw.csv (every sample), summary.csv (median, p10, p90 per path, threads,
modules), breakdown.csv (the strict path's steps), table.md (the Markdown report) and
scaling.png (the scaling runs).

    report.py GUEST_OUTPUT OUT_DIR [--command CMD] [--host-cpu MODEL] [--qemu VERSION] [--no-plot]

It fails (exit 1), saying why, when the run is broken: the benchmark reported an error or did
not end, a sample is missing or not a positive number, or an expected row is absent. Timings are
never judged.
"""
import argparse
import csv
import datetime
import math
import os
import statistics
import sys

PATHS = ["empty", "fs_le", "ie", "glibc_gd", "glibc_tlsdesc_return", "glibc_tlsdesc_dynamic",
         "null_ioctl", "kstls_strict",
         "kstls_cached", "glibc_first_touch", "kstls_first_touch"]
BREAKDOWN = ["getuid", "null_ioctl", "strict_badmod", "strict_badoff", "kstls_strict"]
BREAKDOWN_STEP = {
    "getuid": "syscall entry and exit (a syscall that does nothing)",
    "null_ioctl": "+ fdget, vfs_ioctl, misc device, kstls ioctl dispatch (ENOTTY)",
    "strict_badmod": "+ 16-byte copy-in, owner check, context mutex, registry lookup (miss)",
    "strict_badoff": "+ registry hit, offset check (EINVAL)",
    "kstls_strict": "+ thread-table lookup, counters, 8-byte copy-out: the whole strict path",
}
PRIMS = {
    "getppid": "getppid syscall: getuid + an RCU read-side section (lockdep-tracked)",
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
SCALED = ["glibc_gd", "kstls_cached", "kstls_strict"]
SUMMARY_HEADER = ["path", "threads", "modules", "ns_median", "ns_p10", "ns_p90"]
RAW_HEADER = ["path", "threads", "modules", "repeat", "ns_per_op", "iters", "misses"]


class Broken(Exception):
    pass


def percentile(xs, q):
    """Linear interpolation between closest ranks (numpy's default)."""
    xs = sorted(xs)
    pos = (len(xs) - 1) * q
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def parse(lines):
    """The runs of kstls_bench in the output, one after the other (scripts/bench.sh runs it in
    several processes, i.e. address-space layouts): their samples are pooled, the repeat numbers
    of run i offset by i * repeats; env["runs"] says how many ended."""
    env, raw, errors, rc, runs = {}, [], [], None, 0
    for line in lines:
        line = line.rstrip("\r\n")
        if not line.startswith("KB:"):
            continue
        kind, _, rest = line[3:].partition(":")
        if kind == "env":
            key, _, value = rest.partition("=")
            env[key] = value
        elif kind == "raw":
            f = rest.split(",")
            if len(f) != len(RAW_HEADER):
                raise Broken(f"malformed sample line: {line}")
            try:
                row = dict(path=f[0], threads=int(f[1]), modules=int(f[2]),
                           repeat=runs * int(env.get("repeats", 0)) + int(f[3]),
                           ns=float(f[4]), iters=int(f[5]), misses=int(f[6]))
            except ValueError:
                raise Broken(f"malformed sample line: {line}")
            if not (math.isfinite(row["ns"]) and row["ns"] > 0 and row["iters"] > 0):
                raise Broken(f"not a positive time: {line}")
            raw.append(row)
        elif kind == "slot":
            f = rest.split(",")
            if len(f) != 2:
                raise Broken(f"malformed slot line: {line}")
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
        raise Broken("the benchmark reported errors:\n  " + "\n  ".join(errors))
    if rc is None:
        raise Broken("the benchmark did not end (no KB:end line): crashed or timed out")
    if rc != "rc=0":
        raise Broken(f"the benchmark ended with {rc}")
    return env, raw


def processes(env):
    return "1 process" if env["runs"] == "1" else "%s processes" % env["runs"]


def expected_rows(env):
    threads = [int(x) for x in env["threads"].split()]
    modules = [int(x) for x in env["modules"].split()]
    rows = [(p, 1, 1) for p in ["empty", "fs_le", "ie", "glibc_tlsdesc_return",
                                "glibc_tlsdesc_dynamic", "null_ioctl"]]
    rows += [(p, 1, m) for m in modules for p in SCALED]
    rows += [(p, 1, modules[-1]) for p in ["glibc_first_touch", "kstls_first_touch"]]
    rows += [(p, t, 1) for t in threads if t > 1
             for p in ["empty", "fs_le", "glibc_gd", "kstls_cached", "kstls_strict"]]
    rows += [(p, 1, 1) for p in ["getuid", "strict_badmod", "strict_badoff"] + list(PRIMS)]
    if env.get("kstls_cached_impl", "").startswith("libkstls"):
        rows += [(p, 1, 1) for p in IMPLS]
    return threads, modules, rows


def summarize(env, raw):
    repeats = int(env["repeats"]) * int(env["runs"])
    threads, modules, rows = expected_rows(env)
    groups = {}
    for r in raw:
        groups.setdefault((r["path"], r["threads"], r["modules"]), []).append(r)
    missing = [k for k in rows if k not in groups]
    if missing:
        raise Broken("rows missing from the run: " + ", ".join("%s/%d/%d" % k for k in missing))
    stats = {}
    for key in rows:
        samples = groups[key]
        if sorted(s["repeat"] for s in samples) != list(range(repeats)):
            raise Broken("%s/%d/%d: %d samples, expected repeats 0..%d"
                         % (key + (len(samples), repeats - 1)))
        ns = [s["ns"] for s in samples]
        stats[key] = dict(median=statistics.median(ns), p10=percentile(ns, 0.1),
                          p90=percentile(ns, 0.9), misses=sum(s["misses"] for s in samples),
                          iters=samples[0]["iters"],
                          by_repeat={s["repeat"]: s["ns"] for s in samples})
    return threads, modules, rows, stats


def write_csvs(out, raw, rows, stats):
    with open(os.path.join(out, "raw.csv"), "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(RAW_HEADER)
        for r in raw:
            w.writerow([r["path"], r["threads"], r["modules"], r["repeat"], "%.3f" % r["ns"],
                        r["iters"], r["misses"]])
    for name, keep in (("summary.csv", lambda k: k[0] in PATHS),
                       ("breakdown.csv",
                        lambda k: (k[0] in BREAKDOWN or k[0] in PRIMS) and k[1:] == (1, 1))):
        with open(os.path.join(out, name), "w", newline="") as f:
            w = csv.writer(f, lineterminator="\n")
            w.writerow(SUMMARY_HEADER)
            for k in rows:
                if keep(k):
                    s = stats[k]
                    w.writerow(list(k) + ["%.3f" % s["median"], "%.3f" % s["p10"],
                                          "%.3f" % s["p90"]])


def check_summary(out):
    """Reads summary.csv back: the exact header, known paths, numbers."""
    with open(os.path.join(out, "summary.csv"), newline="") as f:
        rows = list(csv.reader(f))
    if not rows or rows[0] != SUMMARY_HEADER:
        raise Broken("summary.csv: wrong header %r" % (rows[:1],))
    for r in rows[1:]:
        if len(r) != 6 or r[0] not in PATHS:
            raise Broken("summary.csv: bad row %r" % (r,))
        int(r[1]), int(r[2])
        if not all(math.isfinite(float(x)) and float(x) > 0 for x in r[3:]):
            raise Broken("summary.csv: bad numbers %r" % (r,))
    found = {r[0] for r in rows[1:]}
    if found != set(PATHS):
        raise Broken("summary.csv: paths missing: %s" % ", ".join(sorted(set(PATHS) - found)))


def fmt(x):
    return "%.0f" % x if x >= 100 else "%.1f" % x


def paired(stats, a, b):
    """The median over repeats of a's sample divided by b's sample of the same repeat: both were
    taken in one round-robin pass of their phase, tens of milliseconds apart, in one process, so
    the host's state and the process's layout are mostly the same for the two and cancel."""
    ra, rb = stats[a]["by_repeat"], stats[b]["by_repeat"]
    return statistics.median(ra[r] / rb[r] for r in ra)


def ratio(a, b):
    return "%.2f" % (a / b) if b else "-"


def table(env, threads, modules, rows, stats, args):
    med = {k: s["median"] for k, s in stats.items()}
    maxm = modules[-1]
    out = []
    w = out.append
    w("## Results\n")
    w("ns per access: median of %d samples and p10/p90 (%s of %s samples each, every process a"
      " new address-space layout; each sample about %s ms of one path, paths interleaved)."
      " **x glibc** is the ratio of medians to `glibc_gd` at the same threads/modules"
      " (first-touch rows: to `glibc_first_touch`); **x fs_le** to `fs_le` at the same thread"
      " count.\n" % (int(env["repeats"]) * int(env["runs"]), processes(env), env["repeats"],
                     env["sample_ms"]))
    w("| path | threads | modules | median | p10 | p90 | x glibc | x fs_le |")
    w("|---|---:|---:|---:|---:|---:|---:|---:|")
    for k in rows:
        if k[0] not in PATHS:
            continue
        p, t, m = k
        s = stats[k]
        g = med[("glibc_first_touch", 1, maxm)] if "first_touch" in p else med[("glibc_gd", t, m)]
        w("| %s | %d | %d | %s | %s | %s | %s | %s |" % (
            p, t, m, fmt(s["median"]), fmt(s["p10"]), fmt(s["p90"]), ratio(s["median"], g),
            ratio(s["median"], med[("fs_le", t, 1)])))
    w("")
    w("First touch: a new thread times its first access to each of %d modules (a miss and a"
      " block allocation each) and divides by %d; thread creation is not included.\n"
      % (maxm, maxm))

    if ("kstls_gd", 1, 1) in stats:
        w("Other kstls fast paths, one thread, one module (`kstls_cached` above is libkstls's"
          " `__tls_get_addr` called with a `tls_index` that holds a kstls id):\n")
        w("| path | median | p10 | p90 | x glibc | x fs_le |")
        w("|---|---:|---:|---:|---:|---:|")
        for p, what in IMPLS.items():
            s = stats[(p, 1, 1)]
            w("| %s: %s | %s | %s | %s | %s | %s |" % (
                p, what, fmt(s["median"]), fmt(s["p10"]), fmt(s["p90"]),
                ratio(s["median"], med[("glibc_gd", 1, 1)]),
                ratio(s["median"], med[("fs_le", 1, 1)])))
        w("")
    w("### Scaling (median relative to 1 thread, 1 module)\n")
    cols = ["threads=%d" % t for t in threads] + ["modules=%d" % m for m in modules[1:]]
    w("| path | " + " | ".join(cols) + " |")
    w("|---|" + "---:|" * len(cols))
    for p in SCALED + ["fs_le"]:
        base = med[(p, 1, 1)]
        cells = [ratio(med[(p, t, 1)], base) for t in threads]
        cells += [ratio(med[(p, 1, m)], base) if (p, 1, m) in med else "-" for m in modules[1:]]
        w("| %s | %s |" % (p, " | ".join(cells)))
    w("")
    w("Each thread count is a phase of its own (main thread + parked threads + a measuring"
      " thread); `fs_le` measured in the same phase shows how much the machine itself drifted"
      " between phases. Module counts are interleaved in one phase; each access goes to the"
      " next of the N modules in turn.\n")

    w("### Where the strict path's time goes\n")
    w("| step | median | p10 | p90 | + over the step before | x null_ioctl |")
    w("|---|---:|---:|---:|---:|---:|")
    prev = None
    for p in BREAKDOWN:
        s = stats[(p, 1, 1)]
        delta = fmt(s["median"] - prev) if prev is not None else "-"
        w("| %s: %s | %s | %s | %s | %s | %s |" % (
            p, BREAKDOWN_STEP[p], fmt(s["median"]), fmt(s["p10"]), fmt(s["p90"]), delta,
            ratio(s["median"], med[("null_ioctl", 1, 1)])))
        prev = s["median"]
    w("")
    w("The kernel primitives on this kernel, each timed as one ioctl of the benchmark-only"
      " device bench/kmod (C), minus its do-nothing ioctl:\n")
    w("| primitive | median | p10 | p90 | - kmod_nop |")
    w("|---|---:|---:|---:|---:|")
    nop = med[("kmod_nop", 1, 1)]
    for p, what in PRIMS.items():
        s = stats[(p, 1, 1)]
        base = med[("getuid", 1, 1)] if p == "getppid" else nop
        w("| %s: %s | %s | %s | %s | %s |" % (
            p, what, fmt(s["median"]), fmt(s["p10"]), fmt(s["p90"]),
            "-" if p == "kmod_nop" else fmt(s["median"] - base) + (" (- getuid)" if p == "getppid" else "")))
    w("")

    w("### Targets of the strict and cached paths, this run\n")
    base = med[("kstls_cached", 1, 1)]
    k1, f1, g1 = ("kstls_cached", 1, 1), ("fs_le", 1, 1), ("glibc_gd", 1, 1)
    flat_threads = max(med[("kstls_cached", t, 1)] / base for t in threads)
    # Each thread count is a phase of its own: dividing by that phase's fs_le takes out the
    # machine's drift between phases (the modules are interleaved in one phase already).
    flat_drift = max((med[("kstls_cached", t, 1)] / med[("fs_le", t, 1)])
                     / (base / med[("fs_le", 1, 1)]) for t in threads)
    flat_drift_paired = max(paired(stats, ("kstls_cached", t, 1), ("fs_le", t, 1))
                            / paired(stats, k1, f1) for t in threads)
    flat_modules = max(med[("kstls_cached", 1, m)] / base for m in modules)
    flat_modules_paired = max(paired(stats, ("kstls_cached", 1, m), k1) for m in modules)
    targets = [
        ("kstls_strict / null_ioctl", med[("kstls_strict", 1, 1)] / med[("null_ioctl", 1, 1)],
         paired(stats, ("kstls_strict", 1, 1), ("null_ioctl", 1, 1)), 1.15),
        ("kstls_cached / glibc_gd", base / med[g1], paired(stats, k1, g1), 1.0),
        ("kstls_cached / fs_le", base / med[f1], paired(stats, k1, f1), 2.5),
    ]
    if ("kstls_gd", 1, 1) in med:
        kg = ("kstls_gd", 1, 1)
        targets += [
            ("kstls_gd / glibc_gd (both a compiler-generated GD access in a DSO)",
             med[kg] / med[g1], paired(stats, kg, g1), 1.0),
            ("kstls_gd / fs_le", med[kg] / med[f1], paired(stats, kg, f1), 2.5),
        ]
    if ("kstls_tlsdesc", 1, 1) in med:
        kd, gdyn = ("kstls_tlsdesc", 1, 1), ("glibc_tlsdesc_dynamic", 1, 1)
        targets += [
            ("kstls_tlsdesc / glibc_tlsdesc_dynamic (both a gnu2 access in a DSO with a"
             " dynamic block)", med[kd] / med[gdyn], paired(stats, kd, gdyn), 1.0),
        ]
    targets += [
        ("kstls_cached, worst thread count / 1 thread", flat_threads, None, 1.1),
        ("the same, each phase over its own fs_le (drift taken out)", flat_drift,
         flat_drift_paired, 1.1),
        ("kstls_cached, worst module count / 1 module", flat_modules, flat_modules_paired, 1.1),
    ]
    w("Two estimates of each ratio: of the medians, and the median of the ratios of samples"
      " paired by repeat (the two paths measured in the same round-robin pass of one process,"
      " so the host's drift and the process's layout cancel; thread counts are phases of their"
      " own, which only the fs_le-relative row can pair). A target is met when the estimate"
      " it can be judged by, the paired one where there is one, meets it.\n")
    w("| ratio | of medians | paired | target | met |")
    w("|---|---:|---:|---:|---|")
    for name, v, pv, t in targets:
        judged = pv if pv is not None else v
        w("| %s | %.2f | %s | <= %.2f | %s |" % (
            name, v, "-" if pv is None else "%.2f" % pv, t, "yes" if judged <= t else "**no**"))
    w("")
    missed = [k for k in rows if k[0] in ("kstls_cached", "kstls_ref", "kstls_gd")
              and stats[k]["misses"]]
    if missed:
        w("**Warning:** the fast path was left during measured samples: " + ", ".join(
            "%s threads=%d modules=%d (%d slow calls)" % (k[0], k[1], k[2], stats[k]["misses"])
            for k in missed) + ".\n")
    else:
        w("Every measured kstls_cached access was a cache hit: the slow path was never taken"
          " outside warm-up and first touch (counted by the library's GET_ADDR calls).\n")

    w("## Environment\n")
    info = [
        ("date", datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")),
        ("command", "`%s`" % args.command if args.command else "-"),
        ("host CPU", args.host_cpu or "-"),
        ("virtualisation", "QEMU %s, TCG (no KVM), -cpu max -smp 2; guest CPU \"%s\", %s CPUs"
         % (args.qemu or "?", env.get("guest_cpu", "?"), env.get("guest_cpus", "?"))),
        ("guest kernel", env.get("kernel", "?") + " (debug: lockdep, DEBUG_MUTEXES, SLUB"
         " debug, kmemleak)"),
        ("clocksource", env.get("clocksource", "?")),
        ("pinned", "guest CPU %s (sched_setaffinity, every thread)" % env.get("pinned_cpu")),
        ("samples", "%s (address-space layouts) x %s repeats x every path, round-robin,"
         " ~%s ms each, after calibration and one warm-up sample per path"
         % (processes(env), env["repeats"], env["sample_ms"])),
        ("compiler", "%s, %s" % (env.get("compiler", "?"), env.get("cflags", "?"))),
        ("libc", "glibc %s; glibc_gd module block: %s, glibc_tlsdesc_return module block: %s,"
         " glibc_tlsdesc_dynamic module block: %s"
         % (env.get("glibc", "?"), env.get("glibc_gd_block", "?"),
            env.get("tlsdesc_block", "?"), env.get("tlsdesc_dyn_block", "?"))),
        ("kstls_cached", env.get("kstls_cached_impl", "?")),
        ("kstls cache", env.get("kstls_cache", "?")),
        ("kstls_cached measuring thread's slot, per process (0: its home slot; k: k probes"
         " further on every access; -1: not cached)",
         "; ".join("%d thread%s: %s" % (t, "" if t == 1 else "s", ", ".join(d))
                   for t, d in sorted(env.get("slot_distance", {}).items())) or "-"),
    ]
    for k, v in info:
        w("- %s: %s" % (k, v))
    w("")
    w("Absolute numbers come from a debug kernel under TCG emulation on a machine shared with"
      " other builds: they are not hardware numbers. Only ratios within one run mean"
      " anything.\n")
    return "\n".join(out)


def plot(out, threads, modules, stats):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise Broken("matplotlib is missing (Debian package python3-matplotlib)")
    fig, axes = plt.subplots(2, 2, figsize=(11, 8), sharex="col")
    styles = {"glibc_gd": "o-", "kstls_cached": "s-", "kstls_strict": "^-", "fs_le": "x--"}
    for col, (xs, key, label) in enumerate([
            (threads, lambda p, x: (p, x, 1), "threads (1 module)"),
            (modules, lambda p, x: (p, 1, x), "modules (1 thread)")]):
        top, bottom = axes[0][col], axes[1][col]
        for p in SCALED + ["fs_le"]:
            pts = [(x, stats[key(p, x)]) for x in xs if key(p, x) in stats]
            if len(pts) < 2:
                continue
            x = [a for a, _ in pts]
            m = [s["median"] for _, s in pts]
            lo = [s["median"] - s["p10"] for _, s in pts]
            hi = [s["p90"] - s["median"] for _, s in pts]
            top.errorbar(x, m, yerr=[lo, hi], fmt=styles[p], capsize=3, label=p)
            base = stats[key(p, xs[0])]["median"]
            bottom.plot(x, [v / base for v in m], styles[p], label=p)
        top.set_xscale("log", base=2)
        top.set_yscale("log")
        top.set_ylabel("ns per access (median, p10-p90)")
        top.set_title("vs " + label)
        top.grid(True, which="both", alpha=0.3)
        top.legend(fontsize=8)
        bottom.axhline(1.1, color="red", linestyle=":", label="target 1.1x")
        bottom.set_xscale("log", base=2)
        bottom.set_xticks(xs)
        bottom.set_xticklabels([str(v) for v in xs])
        bottom.set_xlabel(label)
        bottom.set_ylabel("median / median at %s=1" % label.split()[0])
        bottom.grid(True, alpha=0.3)
        bottom.legend(fontsize=8)
    fig.suptitle("kstls benchmark: scaling (QEMU TCG guest, debug kernel; ratios only)")
    fig.tight_layout()
    fig.savefig(os.path.join(out, "scaling.png"), dpi=100)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("guest_output")
    ap.add_argument("out_dir")
    ap.add_argument("--command")
    ap.add_argument("--host-cpu")
    ap.add_argument("--qemu")
    ap.add_argument("--no-plot", action="store_true")
    args = ap.parse_args()
    try:
        with open(args.guest_output, errors="replace") as f:
            env, raw = parse(f)
        threads, modules, rows, stats = summarize(env, raw)
        os.makedirs(args.out_dir, exist_ok=True)
        write_csvs(args.out_dir, raw, rows, stats)
        check_summary(args.out_dir)
        md = table(env, threads, modules, rows, stats, args)
        with open(os.path.join(args.out_dir, "table.md"), "w") as f:
            f.write(md)
        if not args.no_plot:
            plot(args.out_dir, threads, modules, stats)
    except (Broken, KeyError, ValueError) as e:
        print("report.py: error: %s" % (e if isinstance(e, Broken) else "bad output: %r" % e),
              file=sys.stderr)
        return 1
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
