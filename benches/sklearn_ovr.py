"""scikit-learn's OneVsRestClassifier(LogisticRegression()) on a multi-label headstart cache: the
reference of scripts/bench_multilabel.sh. Trains on `train`, scores `test`; thresholds 0.5.
Usage: python sklearn_ovr.py FEATURES.h5"""
import sys
import h5py, numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score, f1_score, hamming_loss, accuracy_score
from sklearn.multiclass import OneVsRestClassifier

f = h5py.File(sys.argv[1])
def split(s):
    x = f[s]["features"][:]
    return x.reshape(len(x), -1), f[s]["targets"][:]
x, y = split("train")
xt, yt = split("test")
clf = OneVsRestClassifier(LogisticRegression(max_iter=1000)).fit(x, y)
p = clf.predict_proba(xt)
yp = (p >= 0.5).astype(int)
print("sklearn OneVsRest(LogisticRegression()): macro mAP %.4f micro AP %.4f micro F1 %.4f macro F1 %.4f subset accuracy %.4f Hamming loss %.4f" % (
    average_precision_score(yt, p, average="macro"), average_precision_score(yt, p, average="micro"),
    f1_score(yt, yp, average="micro"), f1_score(yt, yp, average="macro"), accuracy_score(yt, yp),
    hamming_loss(yt, yp)))
