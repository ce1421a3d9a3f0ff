"""Evaluation: pair verification (``verification``), IJB-style template 1:1 (``templates``), 1:N
identification (``identification``), ROC/CMC plots (``plots``) and the ``gluonface eval`` entry (``run``).

``roc`` holds the shared score statistics (ROC, AUC, TAR@FAR, best threshold) in plain NumPy.
"""
