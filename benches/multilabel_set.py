"""Builds a multi-label photo set for scripts/bench_multilabel.sh (a benchmark, not a test).

Tags: cat, dog (Dogs vs Cats) and ant, bee (the ants/bees photos). Each image is one photo (one tag) or
two photos of different tags side by side (each squashed to half the width of a 256x256 square: two
tags). Written to OUT/img/, with OUT/labels.csv (id,tags,split; tags space-separated) and the split of
the source photo (two photos of a composite always come from the same split). Seeded.
Usage: python multilabel_set.py SHARED OUT
"""
import csv, os, random, sys
from PIL import Image

shared, out = sys.argv[1], sys.argv[2]
rng = random.Random(7)
SIZE = 256
sources = {
    "cat": ("cats_dogs", "cat"), "dog": ("cats_dogs", "dog"),
    "ant": ("ants_bees", "ants"), "bee": ("ants_bees", "bees"),
}
photos = {}
for tag, (ds, folder) in sources.items():
    for split in ("train", "test"):
        d = os.path.join(shared, "data", ds, split, folder)
        files = sorted(os.listdir(d))
        rng.shuffle(files)
        photos[tag, split] = [os.path.join(d, f) for f in files]

def take(tag, split):
    files = photos[tag, split]
    return files.pop() if files else None

os.makedirs(os.path.join(out, "img"), exist_ok=True)
rows = []
plan = {"train": (120, 240), "test": (60, 150)}  # (singles per tag, pairs)
tags = list(sources)
for split, (singles, pairs) in plan.items():
    jobs = [[t] for t in tags for _ in range(singles)]
    jobs += [sorted(rng.sample(tags, 2)) for _ in range(pairs)]
    for k, job in enumerate(jobs):
        files = [take(t, split) for t in job]
        if any(f is None for f in files):
            continue
        canvas = Image.new("RGB", (SIZE, SIZE))
        w = SIZE // len(files)
        for i, f in enumerate(files):
            im = Image.open(f).convert("RGB").resize((w, SIZE), Image.BILINEAR)
            canvas.paste(im, (i * w, 0))
        name = f"{split}_{k:04d}.jpg"
        canvas.save(os.path.join(out, "img", name), quality=92)
        rows.append((name, " ".join(job), split))
with open(os.path.join(out, "labels.csv"), "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["id", "tags", "split"])
    w.writerows(rows)
print(f"multilabel set: {len(rows)} images ->", out)
