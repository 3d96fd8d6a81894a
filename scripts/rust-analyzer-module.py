#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""Adds kstls's own crate to the rust-project.json that `make M=... rust-analyzer` wrote.

The kernel's scripts/generate_rust_analyzer.py finds an external module's crate roots by looking
for `<stem>.o` in a Makefile or Kbuild beside each .rs file. kstls's Kbuild is at the top of the
tree and names rust/kstls_main.o, so the module's crate is missed and rust-analyzer would see the
kernel's crates but not ours. This adds it the way that script adds the crates it does find: the
kernel's generated cfgs, and core, kernel, pin_init, zerocopy and zerocopy_derive as deps.

usage: rust-analyzer-module.py RUST_PROJECT_JSON CRATE_ROOT KERNEL_OBJTREE
"""
import json
import pathlib
import sys


def main() -> int:
    project_path, root, objtree = (pathlib.Path(a) for a in sys.argv[1:4])
    root = root.resolve()
    project = json.loads(project_path.read_text())
    crates = project["crates"]
    if any(pathlib.Path(c["root_module"]) == root for c in crates):
        return 0
    index = {c["display_name"]: i for i, c in enumerate(crates)}
    wanted = ["core", "kernel", "pin_init", "zerocopy", "zerocopy_derive"]
    missing = [name for name in ("core", "kernel") if name not in index]
    if missing:
        print(f"{project_path}: no crate {', '.join(missing)}", file=sys.stderr)
        return 1
    cfg = [
        line.strip().replace("--cfg=", "")
        for line in (objtree / "include/generated/rustc_cfg").read_text().splitlines()
        if line.strip()
    ]
    crates.append({
        "display_name": root.stem,
        "root_module": str(root),
        "is_workspace_member": True,
        "deps": [{"crate": index[n], "name": n} for n in wanted if n in index],
        "cfg": cfg,
        "edition": "2021",
        "env": {"RUST_MODFILE": "This is only for rust-analyzer"},
    })
    project_path.write_text(json.dumps(project, sort_keys=True, indent=4) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
