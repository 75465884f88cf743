"""Write dfdc_subset.csv: a seeded, class-balanced subset of ../shared/data/dfdc-faces.

Each row names one face crop, its label, and its identity group (the real video a fake was
made from), so `dfd extract --labels` splits train/val without leaking identities.

    python models/default/dfdc_subset.py DATA_DIR OUT.csv [--per-class 1000]
"""

import argparse
import csv
import random
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("data", type=Path, help="the dfdc-faces folder (with metadata.csv)")
    parser.add_argument("out", type=Path)
    parser.add_argument("--per-class", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rows = list(csv.DictReader(open(args.data / "metadata.csv", newline="")))
    rng = random.Random(args.seed)
    picked = []
    for label in ("real", "fake"):
        subset = [r for r in rows if r["label"] == label]
        rng.shuffle(subset)
        picked += subset[: args.per_class]
    with open(args.out, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "label", "group", "method", "dataset"])
        for row in picked:
            group = (row["original"] or row["video"]).rsplit(".", 1)[0]
            writer.writerow([(args.data / row["file"]).absolute(), row["label"], f"dfdc:{group}",
                             "dfdc" if row["label"] == "fake" else "", "dfdc"])
    print(f"{len(picked)} faces -> {args.out}")


if __name__ == "__main__":
    main()
