#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""results.py - judge the serial log of a kstls guest (scripts/vm.sh) and print the verdict.

Usage: results.py [--run] LOG

The guest (scripts/guest-init.sh) marks its steps with lines that start with "KSTLS-VM: ":

    insmod NAME rc=N              a module was loaded (rc != 0: it failed)
    run-begin                     the job starts
    test-begin NAME               a selftest binary starts; its TAP output follows
    test-end NAME rc=N [timeout]  it ended with status N ("timeout": killed by the time limit)
    exit rc=N                     the job ended with status N
    rmmod NAME rc=N               a module was unloaded (rc != 0: it could not be)
    kmemleak-begin, -end          the kmemleak report
    dmesg-begin, -end             the kernel log; KUnit's KTAP is read from it, after the
                                  line "guest-init: loading modules" the guest writes there
                                  (the suites before it are the kernel's own, run at boot)
    error: TEXT                   a step of the guest's own setup failed
    end                           the guest finished and powers off

Each KUnit case and each selftest case ("ok", "not ok", "# SKIP") counts as one test. Each of
these is a failure of its own: a KUnit suite with no cases, without its summary line, or whose
summary disagrees with its cases; a selftest binary that printed no result, fewer results than
its plan, exited non-zero without a failing case, died of a signal or hit its time limit; a
failed insmod or rmmod; an unreferenced object in the kmemleak report; each distinct kernel
splat (BUG, WARNING, Oops, panic, lockdep, ...) anywhere in the log; a guest that never reached
the end marker; a run in which no test passed or failed. The failures are printed one per line
("FAIL ..."), some followed by indented context, and the last line is "N passed, N failed"
(", N skipped" when there are skipped tests). The exit status is 1 on any failure, else 0.

--run judges a `vm.sh run` log: no test needs to have run, and the job's exit status is left
to the caller, so only the kernel side (KUnit, unloads, leaks, splats, the end) can fail.
"""

import argparse
import re
import signal
import sys

MARK = "KSTLS-VM: "
MAX_CONTEXT = 12

# A kernel log line ("[    1.234567] message"); the dump and the console both have the stamp.
KERNEL_STAMP = re.compile(r"^\[\s*\d+\.\d+\] ?")
TERMINAL_ESCAPE = re.compile(r"\x1b(\[[0-9;?]*[A-Za-z]|[()][0-9A-Za-z]|[A-Za-z])")
SPLAT = re.compile(
    r"\[\s*\d+\.\d+\] (.*(?:BUG:|WARNING:|KASAN|Oops|Kernel panic|general protection fault"
    r"|possible circular locking dependency|possible recursive locking"
    r"|inconsistent lock state|suspicious RCU usage|INFO: task .* blocked"
    r"|sleeping function called from invalid context|UBSAN).*)"
)

# KTAP as KUnit prints it: suites at indent 0, their cases at indent 4.
KUNIT_SUITE_START = re.compile(r"^    # Subtest: (\S+)")
KUNIT_PLAN = re.compile(r"^    1\.\.(\d+)")
KUNIT_CASE = re.compile(r"^    (not )?ok \d+ (.+?)(?: # (SKIP)\b.*)?$")
KUNIT_STATS = re.compile(r"^# (\S+): pass:(\d+) fail:(\d+) skip:(\d+) total:\d+")
KUNIT_SUITE_END = re.compile(r"^(not )?ok \d+ (\S+)")

# TAP as the kselftest harness prints it (results at column 0).
TAP_PLAN = re.compile(r"^1\.\.(\d+)")
TAP_RESULT = re.compile(r"^(not )?ok (\d+)\b(?: -)? ?([^#]*?)\s*(?:#\s*(\w+)\b.*)?$")

MODULES_LOADING = "guest-init: loading modules"

KMEMLEAK_OBJECT = re.compile(r"unreferenced object 0x[0-9a-f]+ \(size \d+\)")


class Report:
    """The counts and the failure lines of one log."""

    def __init__(self):
        self.passed = 0
        self.failed = 0
        self.skipped = 0
        self.ran = 0  # test cases that passed or failed
        self.lines = []

    def case(self, status, what, context=()):
        """Count one test case: status is "pass", "fail" or "skip"."""
        if status == "skip":
            self.skipped += 1
            return
        self.ran += 1
        if status == "fail":
            self.fail(what, context)
        else:
            self.passed += 1

    def fail(self, what, context=()):
        self.failed += 1
        self.lines.append("FAIL " + what)
        self.lines.extend("    " + c for c in list(context)[-MAX_CONTEXT:])

    def summary(self):
        text = f"{self.passed} passed, {self.failed} failed"
        return text + (f", {self.skipped} skipped" if self.skipped else "")


def clean(line):
    """A serial log line without carriage return and terminal escapes."""
    return TERMINAL_ESCAPE.sub("", line.rstrip("\r\n").replace("\r", ""))


class Log:
    """The parts of a serial log, split along the guest's markers."""

    def __init__(self, text):
        self.events = []  # the text of the other markers, in log order
        self.tests = []  # [name, output lines, rc or None, timed out] per selftest binary
        self.dmesg = None
        self.kmemleak = None
        self.splats = {}  # message -> None, in order of first appearance
        self.exit_rc = None
        self.ended = False
        self.last_line = ""
        section = None
        for line in map(clean, text.splitlines()):
            if line.strip():
                self.last_line = line
            splat = SPLAT.search(line)
            if splat:
                self.splats.setdefault(splat.group(1).strip())
            if not line.startswith(MARK):
                if section is not None:
                    section.append(line)
                continue
            marker = line[len(MARK):].strip()
            word, _, rest = marker.partition(" ")
            if word == "test-begin":
                section = []
                self.tests.append([rest, section, None, False])
            elif word == "test-end" and self.tests:
                m = re.match(r"(\S+) rc=(\d+)( timeout)?", rest)
                if m and m.group(1) == self.tests[-1][0]:
                    self.tests[-1][2] = int(m.group(2))
                    self.tests[-1][3] = bool(m.group(3))
                section = None
            elif word == "dmesg-begin":
                section = self.dmesg = []
            elif word == "kmemleak-begin":
                section = self.kmemleak = []
            elif word in ("dmesg-end", "kmemleak-end"):
                section = None
            elif word == "exit" and re.fullmatch(r"rc=\d+", rest):
                self.exit_rc = int(rest[3:])
            elif word == "end":
                self.ended = True
            else:
                self.events.append(marker)


def judge_kunit(report, dmesg):
    """Count the KUnit cases of every suite in the kernel log."""
    suite = None

    def close(why_open):
        name, cases, plan, stats, diag = suite
        counted = tuple(sum(1 for c in cases if c == k) for k in ("pass", "fail", "skip"))
        if why_open:
            report.fail(f"kunit {name}: {why_open}", diag)
        elif not cases:
            report.fail(f"kunit {name}: the suite has no test cases")
        elif stats is None:
            report.fail(f"kunit {name}: no summary line")
        elif stats != counted:
            report.fail(
                f"kunit {name}: summary says pass:{stats[0]} fail:{stats[1]} skip:{stats[2]}, "
                f"the cases say pass:{counted[0]} fail:{counted[1]} skip:{counted[2]}"
            )
        elif plan is not None and plan != len(cases):
            report.fail(f"kunit {name}: planned {plan} cases, reported {len(cases)}")

    for raw in dmesg:
        line = KERNEL_STAMP.sub("", raw, count=1)
        m = KUNIT_SUITE_START.match(line)
        if m:
            if suite:
                close("the suite did not finish")
            suite = [m.group(1), [], None, None, []]
            continue
        if suite is None:
            continue
        name, cases, _, _, diag = suite
        if m := KUNIT_PLAN.match(line):
            suite[2] = int(m.group(1))
        elif m := KUNIT_CASE.match(line):
            status = "skip" if m.group(3) else "fail" if m.group(1) else "pass"
            report.case(status, f"kunit {name}.{m.group(2)}", diag)
            cases.append(status)
            suite[4] = []
        elif m := KUNIT_STATS.match(line):
            if m.group(1) == name:
                suite[3] = tuple(int(m.group(i)) for i in (2, 3, 4))
        elif m := KUNIT_SUITE_END.match(line):
            if m.group(2) == name:
                close(None)
                suite = None
        elif line.startswith(" "):
            diag.append(line.strip())
    if suite:
        close("the suite did not finish")


def judge_selftest(report, name, output, rc, timed_out):
    """Count the TAP cases of one selftest binary and judge how the binary itself ended."""
    plan = None
    results = 0
    failed_cases = 0
    diag = []
    for line in output:
        if m := TAP_PLAN.match(line):
            plan = int(m.group(1))
        elif m := TAP_RESULT.match(line):
            results += 1
            case = m.group(3) or f"test {m.group(2)}"
            directive = (m.group(4) or "").upper()
            if directive == "SKIP":
                status = "skip"
            elif m.group(1) and directive != "TODO":
                status = "fail"
                failed_cases += 1
            else:
                status = "pass"
            report.case(status, f"selftest {name}: {case}", diag)
            diag = []
        elif line.strip():
            diag.append(line)
    problems = []
    if rc is None:
        problems.append("did not finish (the guest died or timed out)")
    elif timed_out:
        problems.append("killed by the per-test time limit (VM_TEST_TIMEOUT)")
    elif rc >= 128:
        try:
            signame = signal.Signals(rc - 128).name
        except ValueError:
            signame = "unknown signal"
        problems.append(f"killed by signal {rc - 128} ({signame})")
    elif rc != 0 and failed_cases == 0:
        problems.append(f"exited with status {rc} but no case failed")
    if results == 0:
        problems.append("printed no test result")
    elif plan is not None and plan != results:
        problems.append(f"planned {plan} tests, reported {results}")
    if problems:
        report.fail(f"selftest {name}: " + "; ".join(problems), diag)


def judge_kmemleak(report, lines):
    """Each unreferenced object is a failure; its backtrace is the context."""
    objects = []
    for line in lines:
        if KMEMLEAK_OBJECT.search(line):
            objects.append([line.strip(), []])
        elif objects and line.strip():
            objects[-1][1].append(line.strip())
    for head, context in objects:
        report.fail("kmemleak: " + head, context[:MAX_CONTEXT])


def judge(text, run=False):
    """The Report for the serial log `text` (of `vm.sh run` when `run`)."""
    log = Log(text)
    report = Report()
    for marker in log.events:
        word, _, rest = marker.partition(" ")
        m = re.match(r"(\S+) rc=(\d+)", rest)
        if word == "error:":
            report.fail("guest: " + rest)
        elif word == "insmod" and m and m.group(2) != "0":
            report.fail(f"insmod {m.group(1)}: the module did not load (rc={m.group(2)})")
        elif word == "rmmod" and m and m.group(2) != "0":
            report.fail(f"rmmod {m.group(1)}: the module did not unload (rc={m.group(2)})")
    if log.dmesg is not None:
        kernel_log = log.dmesg
        for i, line in enumerate(kernel_log):
            if KERNEL_STAMP.sub("", line, count=1) == MODULES_LOADING:
                kernel_log = kernel_log[i + 1:]
                break
        judge_kunit(report, kernel_log)
    for name, output, rc, timed_out in log.tests:
        judge_selftest(report, name, output, rc, timed_out)
    if not run and log.exit_rc not in (None, 0):
        report.fail(f"the guest's test runner exited with status {log.exit_rc}")
    if log.kmemleak is not None:
        judge_kmemleak(report, log.kmemleak)
    for splat in log.splats:
        report.fail("splat: " + splat)
    if not log.ended:
        report.fail(
            "the guest never reached its end marker (boot timeout, panic or hang); "
            "last line: " + log.last_line.strip()
        )
    if not run and report.ran == 0:
        report.fail("no tests ran" + (f" ({report.skipped} skipped)" if report.skipped else ""))
    return report


def main(argv=None):
    parser = argparse.ArgumentParser(description="Judge the serial log of a kstls guest.")
    parser.add_argument("--run", action="store_true", help="the log of `vm.sh run`")
    parser.add_argument("log", help="the serial log (build/guest/serial-*.log)")
    args = parser.parse_args(argv)
    try:
        with open(args.log, encoding="utf-8", errors="replace") as f:
            text = f.read()
    except OSError as e:
        print(f"results.py: {e}", file=sys.stderr)
        return 2
    report = judge(text, run=args.run)
    for line in report.lines:
        print(line)
    print(report.summary())
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
