#!/usr/bin/env python3
"""Reads a run folder's TensorBoard events with the `tensorboard` package's own readers and
checks them against metrics.jsonl, which the same training steps wrote.

  tensorboard_check.py RUN_DIR EVENT_FILES
EVENT_FILES: how many events files the folder must hold (one per invocation of train).
"""
import glob
import json
import math
import os
import sys

try:
    from tensorboard.backend.event_processing import event_accumulator, event_file_loader
except ImportError as e:
    sys.exit(f"tensorboard_check: the tensorboard package is missing ({e}); run ./launch/setup.sh")

run_dir, want_files = sys.argv[1], int(sys.argv[2])
files = sorted(glob.glob(os.path.join(run_dir, "events.out.tfevents.*")))
assert len(files) == want_files, (files, want_files)

# Raw events, file by file: the tensorboard reader verifies each record's CRCs as it goes.
events = []
for path in files:
    loaded = list(event_file_loader.LegacyEventFileLoader(path).Load())
    assert loaded and loaded[0].file_version == "brain.Event:2", (path, loaded[:1])
    events += [e for e in loaded[1:]]
assert all(e.HasField("summary") for e in events)

# The last record of each step in metrics.jsonl wins, as a resumed run may repeat steps.
loss, load, placement = {}, {}, {}
for line in open(os.path.join(run_dir, "metrics.jsonl")):
    r = json.loads(line)
    if r["kind"] == "loss":
        loss[(r["step"], r["rank"])] = r
    elif r["kind"] == "load":
        load[(r["step"], r["rank"], r["layer"])] = r
    elif r["kind"] == "placement":  # live re-placement
        placement[r["step"]] = r
steps = sorted({s for s, _ in loss})
layers = sorted({l for _, _, l in load})

expected = {}  # (step, tag) -> float
hists = {}     # (step, tag) -> list of per-expert counts
for s in steps:
    ranks = sorted(r for step, r in loss if step == s)  # a resume may change the world size
    first = loss[(s, ranks[0])]
    for key in ("loss", "task_loss", "router_loss", "lr", "grad_norm"):
        expected[(s, "train/" + key)] = first[key]
    expected[(s, "train/tokens_per_s")] = sum(loss[(s, r)]["tokens_per_s"] for r in ranks)
    for l in layers:
        recs = [load[(s, r, l)] for r in ranks]
        experts = {}
        for rec in recs:
            held = rec["experts"]  # the expert of each slot; a replica's copies add up
            for slot, t in enumerate(rec["expert_tokens"]):
                experts[held[slot]] = experts.get(held[slot], 0) + t
            expected[(s, f"load/layer{l}/rank{rec['rank']}_tokens")] = rec["rank_tokens"]
        ranks_tokens = [rec["rank_tokens"] for rec in recs]
        mean = sum(ranks_tokens) / len(ranks_tokens)
        expected[(s, f"load/layer{l}/rank_max_over_mean")] = \
            max(ranks_tokens) / mean if mean else 0.0
        counts = [experts[e] for e in sorted(experts)]
        mean = sum(counts) / len(counts)
        expected[(s, f"load/layer{l}/max_over_mean")] = max(counts) / mean if mean else 0.0
        for key in ("entropy", "aux_loss", "z_loss", "drop_rate"):
            expected[(s, f"load/layer{l}/{key}")] = sum(r[key] for r in recs) / len(recs)
        hists[(s, f"load/layer{l}/expert_tokens")] = counts

for s, r in placement.items():
    for layer in r["layers"]:
        for key in ("before", "after"):
            expected[(s, f"placement/layer{layer['layer']}/predicted_{key}")] = layer[key]

got, got_hists = {}, {}
for e in events:
    for v in e.summary.value:
        if v.HasField("histo"):
            got_hists[(e.step, v.tag)] = v.histo
        else:
            got[(e.step, v.tag)] = v.simple_value
assert set(got) == set(expected), sorted(set(got) ^ set(expected))[:10]
for key, want in expected.items():
    # simple_value is a float32
    assert math.isclose(got[key], want, rel_tol=1e-6, abs_tol=1e-6), (key, got[key], want)
assert set(got_hists) == set(hists), sorted(set(got_hists) ^ set(hists))[:10]
for key, counts in hists.items():
    h = got_hists[key]
    assert (h.num, h.sum, h.min, h.max) == (len(counts), sum(counts), min(counts), max(counts)), \
        (key, h, counts)
    assert sum(h.bucket) == len(counts) and list(h.bucket_limit) == sorted(h.bucket_limit), (key, h)
    assert math.isclose(h.sum_squares, sum(c * c for c in counts)), (key, h)

# And TensorBoard's own accumulator (what the dashboard uses) sees the same series.
acc = event_accumulator.EventAccumulator(run_dir, size_guidance={"scalars": 0, "histograms": 0})
acc.Reload()
assert "train/loss" in acc.Tags()["scalars"], acc.Tags()
series = {ev.step: ev.value for ev in acc.Scalars("train/loss")}
assert sorted(series) == steps, (sorted(series), steps)
for s in steps:
    assert math.isclose(series[s], loss[(s, 0)]["loss"], rel_tol=1e-6), s
assert len(acc.Histograms(f"load/layer{layers[0]}/expert_tokens")) == len(steps)
print(f"tensorboard: {len(files)} file(s), {len(events)} step events, {len(expected)} scalars and "
      f"{len(hists)} histograms match metrics.jsonl ({len(placement)} re-placements)")
