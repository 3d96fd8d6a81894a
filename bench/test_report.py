#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""test_report.py - bench/report.py without a guest: it writes synthetic kstls_bench outputs
(the KB: lines of a uml run of the user set and of a qemu-prod run of the syscall set) and
checks what report.py makes of them: the platform column of the CSVs, a missing row failing the
run, targets judged per platform, a missed target's breakdown, timings never failing it; and
the fork_cost lines (KB:fork_) of the syscall set's guest: its table, fork.csv, the pairing of
its phases by repeat, and a broken or missing run failing.

    python3 bench/test_report.py [-v]      (unittest; exit status 0 when every test passed)

scaling.png is checked only when matplotlib is installed; the other tests pass --no-plot.
"""
import contextlib
import csv
import io
import os
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import report  # noqa: E402

# ns per access of a run where every target is met.
GOOD = {
    "empty": 1.0, "fs_le": 1.2, "ie": 1.5, "glibc_gd": 3.0, "glibc_tlsdesc_return": 1.6,
    "glibc_tlsdesc_dynamic": 4.0, "kstls_cached": 2.5, "kstls_ref": 2.6, "kstls_gd": 2.8,
    "kstls_tlsdesc": 3.5, "getuid": 900.0, "getppid": 950.0, "null_ioctl": 1000.0,
    "kstls_strict": 1100.0, "strict_badmod": 1050.0, "strict_badoff": 1080.0,
    "kmod_nop": 980.0, "kmod_copy_in16": 1000.0, "kmod_copy_out8": 990.0, "kmod_mutex": 1000.0,
    "kmod_spinlock": 990.0, "kmod_rcu": 985.0, "kmod_skeleton": 1030.0,
    "glibc_first_touch": 800.0, "kstls_first_touch": 2000.0,
}


def output(platform, sets, ns=None, drop=(), threads=(1, 16), modules=(1, 16), repeats=3,
           runs=2, extra=""):
    """The KB: lines kstls_bench would print: runs processes, every expected row, each sample
    ns(path, threads, modules, repeat) (GOOD's value with a little noise by default)."""
    ns = ns or (lambda p, t, m, r: GOOD[p] * (1 + 0.01 * r))
    rows = report.expected_rows(sets, list(threads), list(modules))
    lines = []
    for _ in range(runs):
        lines += ["KB:env:platform=%s" % platform, "KB:env:set=%s" % " ".join(sets),
                  "KB:env:guest_cpu=Synthetic CPU", "KB:env:guest_cpus=2",
                  "KB:env:kernel=7.3.0-test #1", "KB:env:repeats=%d" % repeats,
                  "KB:env:sample_ms=1", "KB:env:threads=" + " ".join(map(str, threads)),
                  "KB:env:modules=" + " ".join(map(str, modules)),
                  "KB:env:kstls_cached_impl=libkstls __tls_get_addr"]
        for r in range(repeats):
            for p, t, m in rows:
                if (p, t, m) in drop or p in drop:
                    continue
                misses = m if p.endswith("first_touch") and p.startswith("kstls") else 0
                lines.append("KB:raw:%s,%d,%d,%d,%.3f,1000,%d"
                             % (p, t, m, r, ns(p, t, m, r), misses))
        if "user" in sets:
            lines += ["KB:slot:%d,0" % t for t in threads]
        lines.append(extra + "KB:end:rc=0" if extra else "KB:end:rc=0")
    return "\n".join(lines) + "\n"


def fork_output(platform="qemu-prod", contexts=(0, 1, 8000), repeats=3, ops=5, ns=None,
                drop=(), extra=""):
    """The KB:fork_ lines fork_cost would print: ns(contexts, repeat, op) per operation (by
    default 1000 ns at 0 contexts, 1010 at 1, 3000 at the last, plus the op's index)."""
    base = {contexts[0]: 1000, contexts[1]: 1010, contexts[-1]: 3000}
    ns = ns or (lambda c, r, i: base[c] + i)
    lines = ["KB:fork_env:platform=%s" % platform,
             "KB:fork_env:contexts=" + " ".join(map(str, contexts)),
             "KB:fork_env:repeats=%d" % repeats, "KB:fork_env:ops=%d" % ops,
             "KB:fork_env:pinned=victim on CPU 0", "KB:fork_env:other_uid=65534"]
    for r in range(repeats):
        for k in range(len(contexts)):
            c = contexts[(r + k) % len(contexts)]
            if (c, r) in drop:
                continue
            lines.append("KB:fork_raw:%d,%d,%d,%d,%s" % (
                c, r, 4, 2 * 10 ** 9, " ".join(str(ns(c, r, i)) for i in range(ops))))
    lines.append(extra + "KB:fork_end:rc=0")
    return "\n".join(lines) + "\n"


def slower(factor, path, threads=None, modules=None):
    """GOOD, with path (at the given threads/modules, or everywhere) factor times slower."""
    def ns(p, t, m, r):
        v = GOOD[p] * (1 + 0.01 * r)
        if p == path and threads in (None, t) and modules in (None, m):
            v *= factor
        return v
    return ns


class ReportTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.dir = self.tmp.name
        self.out = os.path.join(self.dir, "out")

    def tearDown(self):
        self.tmp.cleanup()

    def run_report(self, *outputs, plot=False):
        files = []
        for i, text in enumerate(outputs):
            name = os.path.join(self.dir, "guest-%d.out" % i)
            with open(name, "w") as f:
                f.write(text)
            files.append(name)
        err, so = io.StringIO(), io.StringIO()
        argv = [self.out] + files + ["--command", "test", "--qemu", "9.9"]
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(so):
            rc = report.main(argv + ([] if plot else ["--no-plot"]))
        md = ""
        if rc == 0:
            with open(os.path.join(self.out, "table.md")) as f:
                md = f.read()
        return rc, md, err.getvalue()

    def both(self, uml_ns=None, prod_ns=None):
        return self.run_report(output("uml", ["user"], uml_ns),
                               output("qemu-prod", ["syscall"], prod_ns))

    def csv_rows(self, name):
        with open(os.path.join(self.out, name), newline="") as f:
            return list(csv.reader(f))

    def target_rows(self, md):
        """The combined target table: {(platform, measure): met}."""
        rows = {}
        start = md.index("| platform | measure |")
        for line in md[start:].split("\n")[2:]:
            if not line.startswith("|"):
                break
            cells = [c.strip() for c in line.strip("|").split("|")]
            rows[(cells[0], cells[1])] = cells[4]
        return rows

    def test_csvs_have_the_platform_column(self):
        rc, md, err = self.both()
        self.assertEqual(rc, 0, err)
        for name in ("raw.csv", "summary.csv", "breakdown.csv"):
            rows = self.csv_rows(name)
            self.assertEqual(rows[0][0], "platform", name)
            self.assertTrue(all(len(r) == len(rows[0]) for r in rows), name)
        summary = self.csv_rows("summary.csv")[1:]
        by = {}
        for r in summary:
            by.setdefault(r[0], set()).add(r[1])
        self.assertEqual(by["uml"], set(report.SUMMARY["user"]))
        self.assertEqual(by["qemu-prod"], set(report.SUMMARY["syscall"]))
        self.assertEqual({r[0] for r in self.csv_rows("breakdown.csv")[1:]}, {"qemu-prod"})
        self.assertEqual({r[0] for r in self.csv_rows("raw.csv")[1:]}, {"uml", "qemu-prod"})

    def test_sections_and_targets_per_platform(self):
        rc, md, err = self.both()
        self.assertEqual(rc, 0, err)
        self.assertIn("## Platform: uml (set: user)", md)
        self.assertIn("## Platform: qemu-prod (set: syscall)", md)
        self.assertIn("seccomp mode", md)
        self.assertIn("production-config kernel", md)
        self.assertLess(md.index("## Targets"), md.index("## Platform: uml"))
        t = self.target_rows(md)
        self.assertEqual(t[("uml", "kstls_cached / glibc_gd")], "yes")
        self.assertEqual(t[("qemu-prod", "kstls_strict / null_ioctl")], "yes")
        self.assertFalse(any(k[0] == "uml" and "strict" in k[1] for k in t))
        self.assertFalse(any(k[0] == "qemu-prod" and "kstls_cached" in k[1] for k in t))
        self.assertEqual(t[("uml", "kstls_tlsdesc / glibc_tlsdesc_dynamic (both a gnu2 access"
                                   " in a DSO with a dynamic block)")], "info")
        self.assertNotIn("**no**", md)
        self.assertNotIn("Where the time goes", md)

    def test_a_missing_row_fails_and_says_which(self):
        rc, _, err = self.run_report(output("uml", ["user"], drop=[("kstls_gd", 1, 1)]),
                                     output("qemu-prod", ["syscall"]))
        self.assertEqual(rc, 1)
        self.assertIn("kstls_gd/1/1", err)
        self.assertIn("uml", err)
        rc, _, err = self.run_report(output("uml", ["user"]),
                                     output("qemu-prod", ["syscall"], drop=["kmod_rcu"]))
        self.assertEqual(rc, 1)
        self.assertIn("kmod_rcu/1/1", err)
        # The thread phase of the syscall set has kstls_strict, not kstls_cached.
        rc, _, err = self.run_report(output("qemu-prod", ["syscall"],
                                            drop=[("kstls_strict", 16, 1)]))
        self.assertEqual(rc, 1)
        self.assertIn("kstls_strict/16/1", err)

    def test_rows_of_the_other_set_are_not_expected(self):
        rc, md, err = self.run_report(output("uml", ["user"]))
        self.assertEqual(rc, 0, err)
        self.assertNotIn("Syscall paths", md)
        rc, md, err = self.run_report(output("qemu-prod", ["syscall"]))
        self.assertEqual(rc, 0, err)
        self.assertNotIn("User-side paths", md)

    def test_targets_are_judged_per_platform(self):
        # The same slow kstls_strict: missed on qemu-prod, never judged on the debug kernel.
        slow = slower(2.0, "kstls_strict")
        rc, md, err = self.run_report(output("uml", ["user"]),
                                      output("qemu-prod", ["syscall"], slow))
        self.assertEqual(rc, 0, err)
        t = self.target_rows(md)
        self.assertEqual(t[("qemu-prod", "kstls_strict / null_ioctl")], "**no**")
        self.assertEqual(t[("uml", "kstls_cached / glibc_gd")], "yes")
        rc, md, err = self.run_report(output("qemu-debug", ["user", "syscall"], slow))
        self.assertEqual(rc, 0, err)
        t = self.target_rows(md)
        self.assertEqual(t[("qemu-debug", "kstls_strict / null_ioctl")],
                         "not judged here (qemu-prod judges it)")
        self.assertNotIn("**no**", md)
        self.assertIn("debug test kernel", md)
        # A slow kstls_cached is uml's miss alone.
        rc, md, err = self.both(uml_ns=slower(1.5, "kstls_cached"))
        self.assertEqual(rc, 0, err)
        t = self.target_rows(md)
        self.assertEqual(t[("uml", "kstls_cached / glibc_gd")], "**no**")
        self.assertEqual(t[("uml", "kstls_gd / glibc_gd (both a compiler-generated GD access"
                                   " in a DSO)")], "yes")
        self.assertEqual(t[("qemu-prod", "kstls_strict / null_ioctl")], "yes")

    def test_missed_strict_shows_its_breakdown(self):
        rc, md, err = self.both(prod_ns=slower(2.0, "kstls_strict"))
        self.assertEqual(rc, 0, err)
        self.assertIn("### Where the time goes: `kstls_strict / null_ioctl` (missed)", md)
        self.assertIn("the largest is kstls_strict", md)
        self.assertIn("### Where the strict path's time goes", md)

    def test_missed_first_touch_shows_allocation_on_top_of_a_hit(self):
        rc, md, err = self.both(prod_ns=slower(3.0, "kstls_first_touch"))
        self.assertEqual(rc, 0, err)
        sec = md[md.index("### Where the time goes: `kstls_first_touch"):]
        self.assertIn("= on top of a hit", sec)
        # The medians (repeat 1 of 0..2, 1% slower): the first touch minus a strict hit.
        on_top = [line for line in sec.split("\n") if line.startswith("| = on top of a hit")]
        self.assertEqual(on_top[0].split("|")[2].strip(), "%.0f" % (6000 * 1.01 - 1100 * 1.01))

    def test_missed_uml_targets_show_paired_ratios_and_misses(self):
        rc, md, err = self.both(uml_ns=slower(1.5, "kstls_gd"))
        self.assertEqual(rc, 0, err)
        sec = md[md.index("### Where the time goes: `kstls_gd / glibc_gd"):]
        self.assertIn("paired x fs_le", sec)
        self.assertIn("paired x empty", sec)
        self.assertIn("slow calls", sec)
        rc, md, err = self.both(uml_ns=slower(1.5, "kstls_cached", threads=16))
        self.assertEqual(rc, 0, err)
        t = self.target_rows(md)
        flat = [v for k, v in t.items() if k[0] == "uml" and "worst of threads" in k[1]]
        self.assertEqual(flat, ["**no**"])
        self.assertIn("slot distance", md)

    def test_broken_outputs_fail(self):
        for text, why in [
                (output("uml", ["user"], extra="KB:error:boom\n"), "boom"),
                (output("uml", ["user"]).replace("KB:end:rc=0\n", ""), "did not end"),
                (output("uml", ["user"]).replace("KB:env:set=user", "KB:env:set=nope"),
                 "unknown set"),
                (output("uml", ["user"]).replace(",1000,0", ",1000,x", 1), "malformed")]:
            rc, _, err = self.run_report(text)
            self.assertEqual(rc, 1, why)
            self.assertIn(why, err)
        rc, _, err = self.run_report(output("uml", ["user"]), output("uml", ["user"]))
        self.assertEqual(rc, 1)
        self.assertIn("two outputs of platform uml", err)

    def fork_table(self, md):
        """The fork_cost table: {contexts: [median, p10, p90, mean, x0 paired, x0 of medians,
        forks/s]}."""
        start = md.index("| contexts of the other user |")
        rows = {}
        for line in md[start:].split("\n")[2:]:
            if not line.startswith("|"):
                break
            cells = [c.strip() for c in line.strip("|").split("|")]
            rows[int(cells[0])] = cells[1:]
        return rows

    def test_fork_cost_table_and_csv(self):
        rc, md, err = self.run_report(output("uml", ["user"]),
                                      output("qemu-prod", ["syscall"]) + fork_output())
        self.assertEqual(rc, 0, err)
        self.assertIn("### Fork latency of a process without a context (fork_cost)", md)
        rows = self.fork_table(md)
        self.assertEqual(sorted(rows), [0, 1, 8000])
        # 3 repeats x ops 1000..1004: median 1002, p10 1000.4 -> "1000", p90 1003.6 -> "1004".
        self.assertEqual(rows[0][:4], ["1002", "1000", "1004", "1002"])
        self.assertEqual(rows[8000][0], "3002")
        self.assertEqual(rows[8000][4], "%.2f" % (3002 / 1002))
        self.assertEqual(rows[0][4], "1.00")
        # 4 forks in 2 s per sample.
        self.assertEqual(rows[1][6], "2.0")
        self.assertIn("**8000 / 0 contexts**: %.2f paired" % (3002 / 1002), md)
        t = self.target_rows(md)
        fork = [v for k, v in t.items() if k[0] == "qemu-prod" and "fork_cost" in k[1]]
        self.assertEqual(fork, ["info"])
        self.assertNotIn("**no**", md)
        rows = self.csv_rows("fork.csv")
        self.assertEqual(rows[0], report.FORK_SUMMARY_HEADER)
        self.assertEqual([r[:2] for r in rows[1:]], [["qemu-prod", "0"], ["qemu-prod", "1"],
                                                     ["qemu-prod", "8000"]])
        raw = self.csv_rows("fork_raw.csv")
        self.assertEqual(raw[0], report.FORK_RAW_HEADER)
        self.assertEqual(len(raw) - 1, 3 * 3 * 5)
        # No fork_cost run: no section, no fork.csv, and no failure.
        os.unlink(os.path.join(self.out, "fork.csv"))
        rc, md, err = self.both()
        self.assertEqual(rc, 0, err)
        self.assertNotIn("fork_cost", md)
        self.assertFalse(os.path.exists(os.path.join(self.out, "fork.csv")))

    def test_fork_phases_are_paired_by_repeat(self):
        # The machine's speed changes from repeat to repeat (x1, x5, x0.1), for every phase of a
        # repeat alike; 8000 contexts cost 2, 3 and 4 times phase 0 in the three repeats. Paired
        # by repeat: the median of 2, 3, 4; the pooled medians say 2000 / 1000 instead.
        speed, cost = [1, 5, 0.1], [2, 3, 4]

        def ns(c, r, i):
            return int(1000 * speed[r] * (cost[r] if c == 8000 else 1))
        rc, md, err = self.run_report(output("qemu-prod", ["syscall"])
                                      + fork_output(ns=ns, repeats=3))
        self.assertEqual(rc, 0, err)
        rows = self.fork_table(md)
        self.assertEqual(rows[8000][4], "3.00")
        self.assertEqual(rows[8000][5], "2.00")
        self.assertEqual(rows[1][4], "1.00")

    def test_broken_fork_runs_fail(self):
        prod = output("qemu-prod", ["syscall"])
        for text, why in [
                (fork_output(drop=[(8000, 1)]), "contexts=8000 repeat=1"),
                (fork_output(extra="KB:fork_error:the holder of 8000 contexts: EDQUOT\n"),
                 "EDQUOT"),
                (fork_output().replace("KB:fork_end:rc=0\n", ""), "did not end"),
                (fork_output().replace("KB:fork_end:rc=0", "KB:fork_end:rc=1"), "rc=1"),
                (fork_output().replace(",2000000000,", ",2000000000,x ", 1), "malformed"),
                (fork_output().replace(",2000000000,1000 ", ",2000000000,", 1),
                 "without 5 operations"),
                (fork_output(platform="uml"), "fork_cost ran on uml")]:
            rc, _, err = self.run_report(prod + text)
            self.assertEqual(rc, 1, why)
            self.assertIn(why, err)

    def test_fork_platform_requires_a_run(self):
        for i, (text, want) in enumerate([(output("qemu-prod", ["syscall"]), 1),
                                          (output("qemu-prod", ["syscall"]) + fork_output(), 0)]):
            name = os.path.join(self.dir, "prod-%d.out" % i)
            with open(name, "w") as f:
                f.write(text)
            err = io.StringIO()
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                rc = report.main([self.out, name, "--fork-platform", "qemu-prod", "--no-plot"])
            self.assertEqual(rc, want, err.getvalue())
            if want:
                self.assertIn("no fork_cost run in the output of platform qemu-prod",
                              err.getvalue())

    @unittest.skipUnless(__import__("importlib").util.find_spec("matplotlib"),
                         "matplotlib is not installed")
    def test_plot(self):
        rc, _, err = self.run_report(output("uml", ["user"]), output("qemu-prod", ["syscall"]),
                                     plot=True)
        self.assertEqual(rc, 0, err)
        self.assertGreater(os.path.getsize(os.path.join(self.out, "scaling.png")), 0)


if __name__ == "__main__":
    unittest.main()
