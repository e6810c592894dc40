"""The table of a bench_gpu.py log: one row per (objective, preset, seq, batch, dtype, mode) from its
`RESULT|...` lines, both sides and their ratio. Used by bench/gpu_suite.sh; works on any log.

    python bench/gpu_table.py LOG
"""

from __future__ import annotations

import sys

FIELDS = ("objective", "preset", "seq", "batch", "dtype", "mode", "side", "tok_s", "mfu", "executed", "memory")


def rows(lines: list[str]) -> dict[tuple[str, ...], dict[str, dict[str, str]]]:
    """(objective, preset, seq, batch, dtype, mode) -> side -> its fields, in the order first seen."""
    table: dict[tuple[str, ...], dict[str, dict[str, str]]] = {}
    for line in lines:
        if not line.startswith("RESULT|"):
            continue
        parts = line.rstrip("\n").split("|")[1:]
        if len(parts) != len(FIELDS):
            continue
        record = dict(zip(FIELDS, parts))
        table.setdefault(tuple(parts[:6]), {})[record["side"]] = record
    return table


def render(table: dict[tuple[str, ...], dict[str, dict[str, str]]]) -> str:
    out = ["| run | transformers tok/s (MFU; executed) | lmforge tok/s (MFU) | ratio | peak GiB HF / ours |",
           "|---|---|---|---|---|"]
    for key, sides in table.items():
        objective, preset, seq, batch, dtype, mode = key
        hf, ours = sides.get("transformers", {}), sides.get("lmforge", {})

        def cell(side: dict[str, str], executed: bool) -> str:
            if not side:
                return "not run (timeout?)"
            if side["tok_s"] == "failed":
                return "failed"
            extra = [side["mfu"]] if side["mfu"] else []
            if executed and side["executed"]:
                extra.append(side["executed"])
            return f"{float(side['tok_s']):,.0f}" + (f" ({'; '.join(extra)})" if extra else "")

        try:
            ratio = f"**{float(ours['tok_s']) / float(hf['tok_s']):.2f}x**"
        except (KeyError, ValueError):
            ratio = "-"
        memory = f"{hf.get('memory') or '-'} / {ours.get('memory') or '-'}"
        out.append(f"| {preset} {objective.upper()} seq {seq} batch {batch} {dtype} {mode} | {cell(hf, True)} | "
                   f"{cell(ours, False)} | {ratio} | {memory} |")
    return "\n".join(out)


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    with open(sys.argv[1], encoding="utf-8", errors="replace") as handle:
        table = rows(handle.readlines())
    print(render(table) if table else "no RESULT lines in the log")
    return 0


if __name__ == "__main__":
    sys.exit(main())
