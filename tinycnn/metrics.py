"""Evaluation metrics, on top of scikit-learn where it already does the job."""
import numpy as np
from sklearn import metrics as skm


def accuracy(y_true, y_pred):
    """Fraction of predictions equal to the labels."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"accuracy: labels {y_true.shape} and predictions {y_pred.shape} differ")
    return float((y_true == y_pred).mean())


def top_k_accuracy(y_true, proba, k=3):
    """Fraction of examples whose label is among the k most probable classes."""
    proba = np.asarray(proba)
    top = np.argsort(-proba, axis=1, kind="stable")[:, :k]
    return float((top == np.asarray(y_true)[:, None]).any(axis=1).mean())


def confusion_matrix(y_true, y_pred, num_classes=None):
    """(K, K) counts: row = true class, column = predicted class."""
    if num_classes is None:
        num_classes = int(max(np.max(y_true), np.max(y_pred))) + 1
    return skm.confusion_matrix(y_true, y_pred, labels=np.arange(num_classes))


def classification_report(y_true, y_pred, class_names=None, as_dict=False):
    """Per-class precision, recall, F1 and support (scikit-learn's report)."""
    labels = np.arange(len(class_names)) if class_names is not None else None
    names = [str(c) for c in class_names] if class_names is not None else None
    return skm.classification_report(y_true, y_pred, labels=labels, target_names=names, digits=4,
                                     output_dict=as_dict, zero_division=0)


def misclassified(y_true, proba):
    """Wrong predictions, most confident first: a list of dicts with index, predicted,
    true and confidence (the probability given to the wrong answer)."""
    proba, y_true = np.asarray(proba), np.asarray(y_true)
    pred = proba.argmax(axis=1)
    wrong = np.flatnonzero(pred != y_true)
    conf = proba[wrong, pred[wrong]]
    order = np.argsort(-conf, kind="stable")
    return [{"index": int(wrong[i]), "predicted": int(pred[wrong[i]]), "true": int(y_true[wrong[i]]),
             "confidence": float(conf[i])} for i in order]
