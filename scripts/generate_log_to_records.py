"""Rebuild ``quantfake generate``'s per-rank records (quantfake/generate_record.py) from a launch's log.

For runs made before generate wrote its records (benchmarks/multigpu_h100): each rank printed its sets (the
summary table: job, mode, role, generated, reused, seconds) and its units (``[rank N] timeline:`` lines: claimed
and done, seconds since work start), which is all a record's costs are made of. A unit's sets are the summary
rows of its job that follow, in order, until a (mode, role) repeats. The profile and steps are not in the log:
pass them (``--steps`` empty means the generator's native steps).

Usage: python scripts/generate_log_to_records.py LOG OUT_DIR [--profile random] [--steps N] [--device-name NAME]
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from quantfake.distributed import PHASE_RE, parse_phases
from quantfake.generate_record import generate_record, write_generate_record

ROW = re.compile(r"^(?P<job>\S+-\S+)\s+(?P<mode>txt2img|img2img)\s+(?P<role>eval|train)\s+(?P<generated>\d+)\s+"
                 r"(?P<reused>\d+)\s+(?P<seconds>[\d.]+)\s.*\s(?P<status>\S+)$")
HEADER = re.compile(r"^\[rank (?P<rank>\d+)/(?P<n>\d+)\] \d+ units .* on (?P<device>\S+) in ")
UNIT = re.compile(r"^\[rank (?P<rank>\d+)\] timeline: (?P<unit>\S+)\s+(?P<began>[\d.]+) ->\s+(?P<ended>[\d.]+) s")


def records_from_log(text: str, profile: str, steps: int | None, device_name: str) -> list[dict]:
    """One record per rank found in ``text`` (the log of one launch, or of one process)."""
    ranks: dict[int, dict] = {}
    current: dict | None = None
    for line in text.replace("\r", "\n").splitlines():
        line = line.strip()
        if m := HEADER.search(line):
            current = ranks.setdefault(int(m["rank"]), {"n": int(m["n"]), "device": m["device"], "rows": [],
                                                        "units": [], "phases": {}})
        elif (m := ROW.match(line)) and current is not None:
            current["rows"].append(m.groupdict())
        elif m := UNIT.match(line):
            ranks[int(m["rank"])]["units"].append((m["unit"], float(m["began"]), float(m["ended"])))
        elif m := PHASE_RE.match(line):
            ranks[int(m[1])]["phases"] = parse_phases(m[2])
    records = []
    for rank, r in sorted(ranks.items()):
        rows, sets, units = list(r["rows"]), [], []
        for name, began, ended in r["units"]:
            job, seen = name.split("[")[0], set()
            units.append({"unit": name, "job": job, "began_s": began, "ended_s": ended})
            while rows and rows[0]["job"] == job and (rows[0]["mode"], rows[0]["role"]) not in seen:
                row = rows.pop(0)
                seen.add((row["mode"], row["role"]))
                generator, precision = job.split("-", 1)
                sets.append({"unit": name, "generator": generator, "precision": precision, "mode": row["mode"],
                             "role": row["role"], "generated": int(row["generated"]), "reused": int(row["reused"]),
                             "seconds": float(row["seconds"]), "status": row["status"]})
        records.append(generate_record(rank=rank, num_processes=r["n"], device=r["device"], device_name=device_name,
                                       options={"profile": profile, "steps": steps, "rebuilt_from_log": True},
                                       units=units, sets=sets, phases=r["phases"]))
    return records


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("log", type=Path)
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--profile", default="random")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--device-name", default="")
    args = ap.parse_args(argv)
    records = records_from_log(args.log.read_text(errors="replace"), args.profile, args.steps, args.device_name)
    if not records:
        print(f"no rank summary in {args.log}", file=sys.stderr)
        return 1
    for record in records:
        path = write_generate_record(args.out_dir, record)
        print(f"{path}: rank {record['rank']}, {len(record['units'])} units, "
              f"{sum(s['generated'] for s in record['sets'])} images")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
