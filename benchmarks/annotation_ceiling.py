"""How high can macro-F1 on the held-out hemato donor go? Supervised baselines on the same 5 kb bins (issue 5).

A class-balanced logistic regression on Signac TF-IDF profiles (bins open in >= 3 cells), scored on the
query donor BMMC_D5T1 (108 cells) three ways:

* reference → query: trained on donor BMMC_D6T1 only (the demo's protocol);
* query 5-fold CV: trained on the query donor's own labels (no donor shift, but ~86 training cells);
* all cells 5-fold CV: trained on 80 % of all 600 cells of both donors, the query's included.

The last one sees labelled cells of the query donor, which the protocol does not allow: it bounds what
a model of these bins can reach when the donor shift is removed.

    python benchmarks/annotation_ceiling.py
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict

from atacformer.demo import QUERY_DONOR, load_data
from atacformer.pp import tfidf


def main() -> None:
    _, hem = load_data()
    X = sp.csr_matrix(hem.X)
    X = X[:, np.flatnonzero(np.asarray((X > 0).sum(0)).ravel() >= 3)]
    T = tfidf((X > 0).astype(np.float64))
    y, query = hem.obs["cell_type"].astype(str).to_numpy(), (hem.obs["donor"] == QUERY_DONOR).to_numpy()
    cv = StratifiedKFold(5, shuffle=True, random_state=0)
    print(f"{T.shape[1]} bins; query donor {QUERY_DONOR}: {query.sum()} cells")
    for C in (0.1, 1.0, 10.0):
        clf = LogisticRegression(C=C, max_iter=3000, class_weight="balanced")
        ref_to_query = f1_score(y[query], clf.fit(T[~query], y[~query]).predict(T[query]), average="macro")
        own = f1_score(y[query], cross_val_predict(clf, T[query], y[query], cv=cv), average="macro")
        pooled = f1_score(y[query], cross_val_predict(clf, T, y, cv=cv)[query], average="macro")
        print(f"C={C:<5} reference→query {ref_to_query:.3f}   query 5-fold CV {own:.3f}   "
              f"all cells 5-fold CV (query cells) {pooled:.3f}", flush=True)


if __name__ == "__main__":
    main()
