#!/usr/bin/env python3
"""Instruction mix of a kernel's mainloop, read from disassembly (nvdisasm or cuobjdump -sass).

The mainloop is taken to be the longest backward branch of the attention entry: its body, from
the branch target to the branch, is one KV tile of the steady state. With a base file given, the
opcodes whose counts differ are listed, which is how a pattern's per-tile cost is counted against
the dense kernel (bench/RESULTS.md).

  loop_mix.py dense.sass nm24.sass [nm48.sass ...]
"""
import collections
import re
import sys

LABEL = re.compile(r"^\s*(\.L_x_\d+):")
INSTRUCTION = re.compile(r"/\*[0-9a-f]{4,}\*/\s+(.*?);")
BRANCH = re.compile(r"\bBRA\b.*?(\.L_x_\d+)")
GUARD = re.compile(r"^@!?U?P\w+\s+")


def mainloop(path):
    labels, body = {}, []
    for line in open(path):
        if m := LABEL.match(line):
            labels[m.group(1)] = len(body)
        elif m := INSTRUCTION.search(line):
            body.append(m.group(1))
    longest = []
    for at, text in enumerate(body):
        m = BRANCH.search(text)
        if m and labels.get(m.group(1), at + 1) <= at and at + 1 - labels[m.group(1)] > len(longest):
            longest = body[labels[m.group(1)] : at + 1]
    return collections.Counter(GUARD.sub("", text).split()[0].split(".")[0] for text in longest)


def main(paths):
    if not paths:
        sys.exit(__doc__)
    base = mainloop(paths[0])
    print(f"{paths[0]}: {sum(base.values())} instructions per tile")
    for path in paths[1:]:
        mix = mainloop(path)
        total = sum(mix.values())
        print(f"{path}: {total} instructions per tile ({total / sum(base.values()):.3f}x)")
        for op in sorted(set(base) | set(mix), key=lambda op: base[op] - mix[op]):
            if mix[op] != base[op]:
                print(f"  {op:<10} {base[op]:>4} -> {mix[op]:>4} ({mix[op] - base[op]:+d})")


if __name__ == "__main__":
    main(sys.argv[1:])
