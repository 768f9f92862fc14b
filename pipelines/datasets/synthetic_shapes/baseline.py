"""Trivial baselines on synthetic_shapes, the figures quoted in README.md.

    python -m pipelines.datasets.synthetic_shapes.baseline [--train 4000 --test 1000 --points 1024]

Features are rotation invariant on purpose (the data has random pose): 16 quantiles of the distance to
the centroid (normalised by the largest, which is left out as it is always 1), optionally with the two smaller covariance eigenvalues over the largest.
"""

from __future__ import annotations

import argparse

import numpy as np

from pipelines.datasets.synthetic_shapes.synthetic_shapes_dataset_builder import generate_split


def features(points: np.ndarray, with_covariance: bool) -> np.ndarray:
    centred = points - points.mean(axis=0)
    radius = np.linalg.norm(centred, axis=1)
    out = [np.quantile(radius / radius.max(), np.linspace(0, 1, 17)[:-1])]
    if with_covariance:
        eig = np.sort(np.linalg.eigvalsh(np.cov(centred.T)))
        out.append(eig[:2] / eig[2])
    return np.concatenate(out)


def main(argv=None) -> dict:
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import NearestCentroid
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=4000)
    parser.add_argument("--test", type=int, default=1000)
    parser.add_argument("--points", type=int, default=1024)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    data = {s: list(generate_split(s, n, args.points, args.seed))
            for s, n in (("train", args.train), ("test", args.test))}
    y = {s: np.array([lab for _, lab, _ in d]) for s, d in data.items()}
    results = {}
    print(f"{'baseline':<72} {'test accuracy':>13}")
    for cov in (False, True):
        x = {s: np.stack([features(p, cov) for _, _, p in d]) for s, d in data.items()}
        feats = "sorted-radius quantiles" + (" + covariance eigenvalues" if cov else "")
        for model_name, model in (("logistic regression", LogisticRegression(max_iter=2000)),
                                  ("nearest centroid", NearestCentroid())):
            clf = make_pipeline(StandardScaler(), model).fit(x["train"], y["train"])
            acc = float((clf.predict(x["test"]) == y["test"]).mean())
            name = f"{model_name}, {feats}"
            results[name] = acc
            print(f"{name:<72} {acc:>13.3f}")
    print(f"{'chance':<72} {1 / 10:>13.3f}")
    return results


if __name__ == "__main__":
    main()
