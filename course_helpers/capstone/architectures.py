"""Three architectures for the same product, compared from measurements (lesson 10).

The product: "will this user come back in the next days?" (lesson 07's seeded transactions,
rolling 7-day features, the label of :mod:`course_helpers.features.data`). One logistic
regression on :data:`~course_helpers.features.pit.MODEL_FEATURES` is trained once and used by
all three architectures, so only the architecture differs:

- ``batch``: a scheduled job scores every user from the features as of its run and writes the
  predictions into a database (SQLite); a request is a lookup by ``user_id``.
- ``online``: a request reads the user's features from lesson 07's online store (materialised
  on the same schedule as the batch job) and asks lesson 01's model server (gunicorn, HTTP).
- ``streaming``: every event updates the user's row in lesson 07's online store at once; a
  request reads it and asks the same model server.

:func:`compare` measures each serving path (client-side latency p50/p95, sequential
throughput), the batch job and the per-event update, and derives freshness exactly from the
schedule where nothing can be measured on a compressed clock; cost per million requests comes
from :mod:`course_helpers.capacity` and the course's price table. :data:`CLOUD_MAP` maps each
box of the course's system to managed services and to its Kubernetes form.
"""

from __future__ import annotations

import dataclasses
import sqlite3
import time
from pathlib import Path
from typing import Any

from .. import capacity, config

ARCHITECTURES = ("batch", "online", "streaming")
#: Seconds between batch runs (and online-store materialisations): a nightly job.
DAILY_S = 86_400.0
#: ``secs_since_last`` for a user with no event in the window (the model needs a number).
NO_HISTORY_S = 7 * 86_400.0
#: Requests sent before the timed ones (connection set-up, first-call costs).
WARMUP = 10
#: Events replayed and requests sent per profile (seconds each in smoke).
SIZES = {"smoke": {"rows": 20_000, "requests": 100, "events": 200},
         "classroom": {"rows": 100_000, "requests": 200, "events": 400},
         "full": {"rows": 1_000_000, "requests": 2_000, "events": 5_000}}

FAILURE_MODES = {
    "batch": "Job late or failed: every prediction keeps ageing (stale, still served). A user "
             "not in the last run has no prediction (a fallback is needed). Cost follows users "
             "x runs, not traffic. A bad model stays live until the next run.",
    "online": "The model server is on the request path: its outage is the product's outage "
              "and its p95 grows with traffic (lesson 02). Features come from the daily "
              "materialisation, so they are as old as batch's; only the model call is fresh.",
    "streaming": "The stream's lag is the features' age: a backlog makes them silently stale. "
                 "Every event costs an update, asked for or not. Streaming and offline feature "
                 "code can drift apart (training/serving skew, lesson 07).",
}


def _fill(features):
    """The model's input matrix: NaN mean -> 0, no history -> NO_HISTORY_S (train = serve)."""
    from ..features.pit import MODEL_FEATURES

    X = features[MODEL_FEATURES].astype("float64").copy()
    X["amount_mean_7d"] = X["amount_mean_7d"].fillna(0.0)
    X["secs_since_last"] = X["secs_since_last"].fillna(NO_HISTORY_S)
    return X


@dataclasses.dataclass
class Product:
    """The data and the one model every architecture serves (see the module docstring)."""

    events: Any        # DataFrame: user_id, item_id, amount, ts
    rolling: Any       # DataFrame: rolling 7-day features after each event (lesson 07)
    labels: Any        # DataFrame: user_id, label_ts, label (prediction points)
    model: Any         # fitted scikit-learn pipeline on MODEL_FEATURES
    model_path: str    # the same model saved as an MLflow model (for the model server)
    as_of: Any         # Timestamp of the last batch run / materialisation
    users: int

    @property
    def events_per_request(self) -> float:
        """Events the stream must process per prediction request (labels are the requests)."""
        return len(self.events) / max(1, len(self.labels))

    @property
    def scored_per_request(self) -> float:
        """Predictions a daily batch job computes per request served that day."""
        from ..features.data import DAYS

        return self.users / max(1e-9, len(self.labels) / DAYS)


def build_product(rows: int, seed: int = 0) -> Product:
    """Lesson 07's data and features (cached by rows and seed), one model, saved for serving."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from .. import model as course_model
    from ..features import data, engines, pit

    info = data.generate(rows=rows, seed=seed, show=False)
    events = data.load_events(info.path)
    rolling = engines.rolling_features(events)
    labels = data.load_labels(info.path)
    joined = pit.point_in_time_join(labels, rolling)
    X, y = _fill(joined), joined["label"].to_numpy()
    if len(set(y)) < 2:
        raise ValueError(f"rows={rows} gives labels of one class only: use more rows")
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(X, y)
    path = config.workspace_dir("capstone", "architectures") / f"model-{rows}-s{seed}"
    if not (path / "MLmodel").exists():
        course_model.save(clf, path, X.head(5))
    # the last batch run: midnight of the data's last full day; events after it are the stream
    as_of = events["ts"].max().normalize()
    return Product(events, rolling, labels, clf, str(path), as_of, int(events["user_id"].nunique()))


def _percentiles(ms: list[float]) -> tuple[float, float]:
    import numpy as np

    return float(np.percentile(ms, 50)), float(np.percentile(ms, 95))


def _cheapest(prices, provider: str | None):
    rows = prices if provider is None else prices[prices["provider"] == provider]
    if rows.empty:
        raise ValueError(f"no prices for provider {provider!r}: use one of "
                         f"{sorted(set(prices['provider']))}")
    return rows.sort_values("usd_per_hour").iloc[0]


def _row_dict(X) -> list[dict[str, float]]:
    return [{k: float(v) for k, v in r.items()} for r in X.to_dict("records")]


def measure_batch(product: Product, requests: int, db_path: str | Path, seed: int = 0) -> dict:
    """Score every user as of the last run into SQLite, then time ``requests`` lookups."""
    import numpy as np

    from ..features.store import latest_before
    from ..features.pit import finish

    t0 = time.perf_counter()
    snap = latest_before(product.rolling, product.as_of)
    snap["label_ts"] = product.as_of
    probs = product.model.predict_proba(_fill(finish(snap)))[:, 1]
    db = sqlite3.connect(str(db_path))
    with db:
        db.execute("DROP TABLE IF EXISTS predictions")
        db.execute("CREATE TABLE predictions (user_id INTEGER PRIMARY KEY, p REAL, scored_at TEXT)")
        db.executemany("INSERT INTO predictions VALUES (?, ?, ?)",
                       [(int(u), float(p), str(product.as_of)) for u, p in
                        zip(snap["user_id"], probs)])
    job_s = time.perf_counter() - t0
    users = np.random.default_rng(seed).choice(snap["user_id"].to_numpy(), size=requests)
    lat, t1 = [], time.perf_counter()
    for u in users:
        s = time.perf_counter()
        db.execute("SELECT p FROM predictions WHERE user_id = ?", (int(u),)).fetchone()
        lat.append((time.perf_counter() - s) * 1000)
    wall = time.perf_counter() - t1
    db.close()
    return {"latencies_ms": lat, "rps": requests / wall, "job_s": job_s, "scored": len(snap)}


def replay(store, rolling, since, events: int) -> tuple[list[float], list[float]]:
    """The stream: the first ``events`` feature rows at or after ``since``, in time order, each
    written into ``store`` as soon as it happens (lesson 07's store, one user's row).

    Returns ``(update_ms, age_ms)``: the time to write each row, and each row's age when a
    request first reads it back (write, then read: the least lag a stream can have here).
    """
    import numpy as np

    later = rolling[rolling["ts"] >= since].sort_values("ts").head(events)
    dtypes = later.dtypes.to_dict()
    update_ms, ages_ms = [], []
    for i in range(len(later)):
        ev = later.iloc[[i]].astype(dtypes)
        just_after = ev["ts"].iloc[0] + np.timedelta64(1, "us")
        written = time.perf_counter()
        store.materialize(ev, just_after)
        update_ms.append((time.perf_counter() - written) * 1000)
        store.get([int(ev["user_id"].iloc[0])], just_after)
        ages_ms.append((time.perf_counter() - written) * 1000)
    return update_ms, ages_ms


def measure_online(product: Product, requests: int, server_url: str, store, *,
                   stream: bool = False, events: int = 0, seed: int = 0) -> dict:
    """Features from ``store`` then POST /predict to the model server, ``requests`` times.

    ``stream=True``: before the requests, replay ``events`` events after the last
    materialisation into the store one at a time (the per-event update is timed), and
    measure each updated row's age when it is first read back.
    """
    import numpy as np

    from ..serving.client import Client

    store.materialize(product.rolling, product.as_of)
    update_ms, ages_ms = [], []
    if stream:
        update_ms, ages_ms = replay(store, product.rolling, product.as_of, events)
        if not update_ms:
            raise ValueError("no events after the last materialisation: use more rows")
    rng = np.random.default_rng(seed)
    users = rng.choice(product.rolling["user_id"].unique(), size=requests)
    at = product.rolling["ts"].max() + np.timedelta64(1, "us")
    client, lat, failed = Client(server_url), [], 0
    store_ms: list[float] = []
    predict_ms: list[float] = []
    try:
        for u in users[:WARMUP]:  # first requests pay for connections, lazy imports: not timed
            client.post("/predict", {"row": _row_dict(_fill(store.get([int(u)], at)))[0]})
        t1 = time.perf_counter()
        for u in users:
            s = time.perf_counter()
            row = _row_dict(_fill(store.get([int(u)], at)))[0]
            m = time.perf_counter()
            status, _ = client.post("/predict", {"row": row})
            e = time.perf_counter()
            lat.append((e - s) * 1000)
            store_ms.append((m - s) * 1000)
            predict_ms.append((e - m) * 1000)
            failed += status != 200
    finally:
        client.close()
    wall = time.perf_counter() - t1
    if failed:
        raise RuntimeError(f"{failed} of {requests} requests to {server_url} failed: "
                           "see the model server's log in <workspace>/logs/")
    return {"latencies_ms": lat, "rps": requests / wall, "update_ms": update_ms,
            "ages_ms": ages_ms, "store_ms": store_ms, "predict_ms": predict_ms}


def compare(profile: str | None = None, *, rows: int | None = None, requests: int | None = None,
            events: int | None = None, batch_every_s: float = DAILY_S,
            provider: str | None = None, seed: int = 0, prices=None) -> "Any":
    """Measure the three architectures on this machine; one row each (a DataFrame).

    Columns: ``p50_ms``/``p95_ms`` (client-side latency of one request, sequential),
    ``rps`` (one caller, requests/s), ``prediction_age_s``/``feature_age_s`` (median age when
    served: measured for streaming, exact from the schedule ``batch_every_s`` otherwise:
    uniform requests between runs see half a period plus the job's duration),
    ``feature_age_worst_s``, ``usd_per_1m`` (serving plus the batch job's or the updates'
    share, on the cheapest priced instance: :func:`capacity.cost_per_million`), ``served_by``,
    ``failure_modes``. ``df.attrs`` keeps the raw measurements and the instance used.
    """
    import pandas as pd

    from ..features.store import OnlineStore
    from ..serving.server import serve

    prof = config.get_profile(profile)
    size = SIZES[prof.name]
    rows, requests = rows or size["rows"], requests or size["requests"]
    events = events or size["events"]
    if batch_every_s <= 0:
        raise ValueError("batch_every_s must be positive (seconds between batch runs)")
    product = build_product(rows, seed)
    prices = capacity.load_prices() if prices is None else prices
    inst = _cheapest(prices, provider)
    usd_h = float(inst["usd_per_hour"])

    def per_1m(rps: float) -> float:
        return capacity.cost_per_million(usd_h, 1, rps)

    out_dir = config.workspace_dir("capstone", "architectures")
    batch = measure_batch(product, requests, out_dir / "batch_predictions.db", seed)
    server = serve(product.model_path, name="arch-model-server", workers=1, cache="none",
                   db=None)
    for old in ("online_daily.db", "online_stream.db"):  # start from empty stores
        (out_dir / old).unlink(missing_ok=True)
    daily = OnlineStore(out_dir / "online_daily.db", prefix="daily")
    live = OnlineStore(out_dir / "online_stream.db", prefix="stream")
    try:
        health = _health_ms(server.url, 30)
        online = measure_online(product, requests, server.url, daily, seed=seed)
        stream = measure_online(product, requests, server.url, live, stream=True,
                                events=events, seed=seed)
    finally:
        daily.close()
        live.close()
        server.stop()

    half = batch_every_s / 2
    upd_rps = 1000 / (sum(stream["update_ms"]) / len(stream["update_ms"]))
    job_rps = batch["scored"] / batch["job_s"]
    rows_out = []
    for name, m, pred_age, feat_age, worst, extra, served_by in [
        ("batch", batch, half + batch["job_s"], half + batch["job_s"],
         batch_every_s + batch["job_s"], product.scored_per_request * per_1m(job_rps),
         "SQLite lookup by user_id, in the caller's process"),
        ("online", online, 0.0, half, batch_every_s, 0.0,
         "online store (daily) + HTTP to lesson 01's server"),
        ("streaming", stream, 0.0, _percentiles(stream["ages_ms"])[0] / 1000,
         _percentiles(stream["ages_ms"])[1] / 1000,
         product.events_per_request * per_1m(upd_rps),
         "online store (per event) + HTTP to lesson 01's server"),
    ]:
        p50, p95 = _percentiles(m["latencies_ms"])
        rows_out.append({"architecture": name, "p50_ms": round(p50, 3), "p95_ms": round(p95, 3),
                         "rps": round(m["rps"], 1), "prediction_age_s": round(pred_age, 3),
                         "feature_age_s": round(feat_age, 4),
                         "feature_age_worst_s": round(worst, 4),
                         "usd_per_1m": round(per_1m(m["rps"]) + extra, 4),
                         "served_by": served_by, "failure_modes": FAILURE_MODES[name]})
    df = pd.DataFrame(rows_out).set_index("architecture")
    df.attrs.update({
        "instance": f"{inst['provider']} {inst['instance']} ({inst['vcpus']} vCPU, "
                    f"${usd_h}/h)", "usd_per_hour": usd_h, "rows": len(product.events),
        "users": product.users, "requests": requests, "events_replayed": len(stream["update_ms"]),
        "events_per_request": round(product.events_per_request, 1),
        "scored_per_request": round(product.scored_per_request, 1),
        "batch_job_s": round(batch["job_s"], 4), "batch_scored": batch["scored"],
        "update_p50_ms": round(_percentiles(stream["update_ms"])[0], 3),
        "health_p50_ms": round(health, 3), "batch_every_s": batch_every_s,
        "profile": prof.name,
        # per-request service times of each piece on one CPU, for what_breaks_first
        "service_ms": {
            "model server (1 worker)": _mean(online["predict_ms"] + stream["predict_ms"]),
            "online store read": _mean(online["store_ms"] + stream["store_ms"]),
            "stream update (per event)": _mean(stream["update_ms"]),
            "batch lookup (database)": _mean(batch["latencies_ms"]),
        },
    })
    return df


def _mean(ms: list[float]) -> float:
    return round(sum(ms) / len(ms), 4)


def what_breaks_first(df, traffic_rps: float, multipliers: tuple[float, ...] = (1, 10, 100),
                      utilisation: float = 0.7):
    """Each request-path piece at ``multipliers`` x ``traffic_rps`` (requests/s): its capacity
    on one CPU (1000 / measured mean service ms, a lower bound: the client's share of each
    call is counted too), the demand on it (stream updates: events per request x rps) and
    the CPUs it needs at ``utilisation`` (:func:`capacity.replicas_needed`). Sorted by the
    CPUs needed at the largest multiplier: the first row breaks first."""
    import pandas as pd

    if traffic_rps <= 0:
        raise ValueError("traffic_rps must be positive: take it from the run's timeline")
    service = df.attrs["service_ms"]
    per_request = {"stream update (per event)": df.attrs["events_per_request"]}
    rows = []
    for piece, ms in service.items():
        cap = 1000.0 / ms
        row = {"piece": piece, "service_ms": ms, "capacity_rps_per_cpu": round(cap, 1)}
        for k in multipliers:
            demand = traffic_rps * k * per_request.get(piece, 1.0)
            row[f"load_{k:g}x"] = round(demand / cap, 3)
            row[f"cpus_{k:g}x"] = capacity.replicas_needed(demand, cap, utilisation)
        rows.append(row)
    last = f"load_{multipliers[-1]:g}x"
    return pd.DataFrame(rows).set_index("piece").sort_values(last, ascending=False)


def _health_ms(url: str, n: int) -> float:
    """Median round trip of GET /health: the HTTP cost any service in front of a store adds."""
    import http.client
    from urllib.parse import urlparse

    parts = urlparse(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    ms = []
    try:
        for _ in range(n):
            s = time.perf_counter()
            conn.request("GET", "/health")
            conn.getresponse().read()
            ms.append((time.perf_counter() - s) * 1000)
    finally:
        conn.close()
    return _percentiles(ms)[0]


def plot(df, axes=None):
    """Three panels: latency p50/p95 (ms), feature age when served (s, log), USD per 1M."""
    import matplotlib.pyplot as plt
    import numpy as np

    if axes is None:
        _, axes = plt.subplots(1, 3, figsize=(12, 3.4))
    names = list(df.index)
    x = np.arange(len(names))
    colours = ["#118ab2", "#ef476f", "#06d6a0"][:len(names)]
    axes[0].bar(x - 0.2, df["p50_ms"], 0.4, label="p50", color="#8ecae6")
    axes[0].bar(x + 0.2, df["p95_ms"], 0.4, label="p95", color="#023047")
    axes[0].set_ylabel("ms per request")
    axes[0].set_title("Latency (measured)")
    axes[0].legend()
    age = df["feature_age_s"].clip(lower=1e-4)
    axes[1].bar(x, age, color=colours)
    axes[1].set_yscale("log")
    axes[1].set_ylabel("seconds (log)")
    axes[1].set_title("Feature age when served (median)")
    bars = axes[2].bar(x, df["usd_per_1m"], color=colours)
    axes[2].bar_label(bars, labels=[f"${v:.3f}" for v in df["usd_per_1m"]], fontsize=8)
    axes[2].set_ylabel("USD per 1M requests")
    axes[2].set_title("Cost (" + str(df.attrs.get("instance", "")).split(" (")[0] + ")")
    for ax in axes:
        ax.set_xticks(x, names)
    axes[0].figure.tight_layout()
    return axes


# -------------------------------------------------------------------------------- the map
#: Each box of the course's system, the lesson it comes from, and its counterparts. Product
#: names as in the providers' documentation (checked 2026-11); "none" where a provider has
#: no managed service for it. ``kubernetes`` names what the course renders, or the usual
#: open-source way where it renders nothing.
CLOUD_MAP: list[dict[str, str]] = [
    {"box": "model server", "ours": "FastAPI + gunicorn (serving.server)", "lesson": "01, 02",
     "aws": "Amazon SageMaker AI real-time endpoints",
     "gcp": "Vertex AI online inference (endpoints)",
     "azure": "Azure Machine Learning managed online endpoints",
     "kubernetes": "Deployment + Service + HorizontalPodAutoscaler: deploy.manifests.kubernetes "
                   "(lesson 04); canary: an Argo Rollouts Rollout (rollout.manifests.argo_rollout) "
                   "or a Flagger Canary (rollout.manifests.flagger_canary), lesson 09"},
    {"box": "load balancer", "ours": "nginx (deploy.nginx)", "lesson": "02, 09",
     "aws": "Elastic Load Balancing (Application Load Balancer)",
     "gcp": "Cloud Load Balancing (Application Load Balancer)",
     "azure": "Azure Application Gateway / Azure Load Balancer",
     "kubernetes": "Service (deploy.manifests.service, lesson 04) + an Ingress controller; "
                   "weights: the Rollout's setWeight steps "
                   "(rollout.manifests.argo_rollout, lesson 09)"},
    {"box": "tracking and registry", "ours": "MLflow server (tracking)", "lesson": "06",
     "aws": "Amazon SageMaker AI with MLflow (managed MLflow tracking servers); "
            "SageMaker Model Registry",
     "gcp": "Vertex AI Experiments; Vertex AI Model Registry",
     "azure": "Azure Machine Learning workspace (MLflow-compatible tracking and registry)",
     "kubernetes": "MLflow server as a Deployment + Service, PostgreSQL and object storage "
                   "behind it (not rendered by the course)"},
    {"box": "pipeline orchestrator", "ours": "Prefect 3 (pipeline)", "lesson": "03",
     "aws": "Amazon SageMaker Pipelines; AWS Step Functions; "
            "Amazon Managed Workflows for Apache Airflow",
     "gcp": "Vertex AI Pipelines; Cloud Composer; Workflows",
     "azure": "Azure Machine Learning pipelines; Azure Data Factory",
     "kubernetes": "Prefect worker with a Kubernetes work pool: each flow run a Job "
                   "(not rendered by the course)"},
    {"box": "metrics and alerts", "ours": "Prometheus + Alertmanager (monitoring)",
     "lesson": "08",
     "aws": "Amazon Managed Service for Prometheus (alert manager included); Amazon CloudWatch",
     "gcp": "Google Cloud Managed Service for Prometheus; Cloud Monitoring alerting",
     "azure": "Azure Monitor managed service for Prometheus; Azure Monitor alerts",
     "kubernetes": "Prometheus Operator (ServiceMonitor, PrometheusRule); the SLO rules of "
                   "lesson 08 load as a PrometheusRule"},
    {"box": "feature store", "ours": "Parquet offline + OnlineStore (features.store)",
     "lesson": "07",
     "aws": "Amazon SageMaker Feature Store", "gcp": "Vertex AI Feature Store",
     "azure": "Azure Machine Learning managed feature store",
     "kubernetes": "Feast (needs pandas < 3) with Redis as online store "
                   "(not rendered by the course)"},
    {"box": "cache", "ours": "Redis / in-process LRU (serving.cache)", "lesson": "01",
     "aws": "Amazon ElastiCache (Valkey, Redis OSS)",
     "gcp": "Memorystore for Redis; Memorystore for Valkey",
     "azure": "Azure Managed Redis (Azure Cache for Redis retires 2027-2028)",
     "kubernetes": "StatefulSet + Service (a Helm chart or an operator)"},
    {"box": "database", "ours": "PostgreSQL / SQLite prediction log (serving.store)",
     "lesson": "01",
     "aws": "Amazon RDS for PostgreSQL; Amazon Aurora PostgreSQL",
     "gcp": "Cloud SQL for PostgreSQL; AlloyDB for PostgreSQL",
     "azure": "Azure Database for PostgreSQL flexible server",
     "kubernetes": "an operator (e.g. CloudNativePG) or a managed database outside the cluster"},
    {"box": "object storage", "ours": "the workspace directory (MLflow artifacts, Parquet)",
     "lesson": "01, 06, 07",
     "aws": "Amazon S3", "gcp": "Cloud Storage", "azure": "Azure Blob Storage",
     "kubernetes": "the provider's object store (S3 API), or MinIO in the cluster"},
    {"box": "load generator", "ours": "Locust (loadtest)", "lesson": "02",
     "aws": "Distributed Load Testing on AWS (a solution; runs Locust, JMeter, k6)",
     "gcp": "none managed (Locust on GKE is Google's documented pattern)",
     "azure": "Azure Load Testing (JMeter and Locust scripts)",
     "kubernetes": "Locust master + workers as Deployments (locust --master / --worker)"},
]


def cloud_map():
    """:data:`CLOUD_MAP` as a DataFrame indexed by box."""
    import pandas as pd

    return pd.DataFrame(CLOUD_MAP).set_index("box")


def kubernetes_kinds(model_uri: str = "models:/course-model@champion") -> dict[str, list[str]]:
    """The kinds of the manifests the package renders for the model server: lesson 04's
    (Deployment, Service, HPA) and lesson 09's canary (Argo Rollouts, Flagger)."""
    from ..deploy import manifests as k8s
    from ..deploy.spec import DeploymentSpec
    from ..rollout import manifests as rollout

    spec = DeploymentSpec.many_small(model_uri, replicas=2)
    docs = k8s.kubernetes(spec, tracking_uri=rollout.TRACKING_URI)
    return {"lesson 04: deploy.manifests.kubernetes": [d["kind"] for d in docs],
            "lesson 09: rollout.manifests.argo_rollout":
                [d["kind"] for d in rollout.argo_rollout("model", model_uri)],
            "lesson 09: rollout.manifests.flagger_canary":
                [d["kind"] for d in rollout.flagger_canary("model", model_uri)]}
