"""Model monitoring: drift of inputs and predictions, data quality, delayed-label AUC.

:func:`export` publishes a window's drift result as Prometheus gauges (served by the webhook
receiver's ``/metrics``, job ``model-monitor``), so drift alerts take the same path as SLO
alerts: Prometheus rule ``ModelInputDrift`` -> Alertmanager -> receiver -> retraining.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from .prometheus import monitoring_dir


def export(result: dict[str, Any], job: str = "model-monitor") -> None:
    """Publish one window's drift result (``psi``, ``ks_p`` per feature, ``flagged_features``,
    ``alert``, ``window``, optional ``prediction_psi``) as gauges ``mlops_drift_*``."""
    metrics = [
        {"name": "mlops_drift_alert", "value": 1.0 if result.get("alert") else 0.0,
         "help": "1 when the last window's drift test raised an alarm"},
        {"name": "mlops_drift_flagged_features", "value": float(len(result.get("flagged_features", []))),
         "help": "features flagged in the last window (after the multiple-testing correction)"},
        {"name": "mlops_drift_window", "value": float(result.get("window", 0)),
         "help": "index of the last window tested"},
    ]
    for feature, value in (result.get("psi") or {}).items():
        metrics.append({"name": "mlops_drift_psi", "labels": {"feature": feature},
                        "value": float(value), "help": "population stability index per feature"})
    for feature, value in (result.get("ks_p") or {}).items():
        metrics.append({"name": "mlops_drift_ks_pvalue", "labels": {"feature": feature},
                        "value": float(value), "help": "two-sample KS p-value per feature"})
    if result.get("prediction_psi") is not None:
        metrics.append({"name": "mlops_drift_prediction_psi", "value": float(result["prediction_psi"]),
                        "help": "PSI of the predicted probabilities"})
    path = monitoring_dir() / "drift_metrics.json"
    tmp = path.with_name(".drift_metrics.json.tmp")
    tmp.write_text(json.dumps({"job": job, "updated": time.time(), "metrics": metrics}))
    os.replace(tmp, path)
