"""Median milliseconds per optimizer step of one pile-trainer run, from the
"time" of its train records in metrics.jsonl, after the first WARM steps.

    python3 bench/step_ms.py METRICS_JSONL WARM
"""
import json
import statistics
import sys

records = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
times = [r["time"] for r in records if "train/loss" in r]
steps = [b - a for a, b in zip(times, times[1:])][int(sys.argv[2]):]
print("%.3f" % (1000 * statistics.median(steps)))
