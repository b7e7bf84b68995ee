"""Prometheus metrics of architecture.md, defined once; services update them.

Every name starts with ``chainwatch_``. Labels are bounded sets (topics, reason codes, alert
types, severities, partitions), never ids or addresses.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

RECORDS_CONSUMED = Counter(
    "chainwatch_records_consumed", "Records read from Kafka", ["topic"])
RECORDS_PRODUCED = Counter(
    "chainwatch_records_produced", "Records written to Kafka", ["topic"])
DLQ_RECORDS = Counter(
    "chainwatch_dlq_records", "Records sent to the dead-letter topic", ["reason", "stage"])
DLQ_WRITE_FAILURES = Counter(
    "chainwatch_dlq_write_failures", "Dead letters that could not be written (refused by the "
    "producer or failed on delivery); the service logs each and goes on", ["stage"])
ALERTS = Counter(
    "chainwatch_alerts", "Alerts raised", ["type", "severity"])
EVENT_TO_ALERT = Histogram(
    "chainwatch_event_to_alert_seconds",
    "From a triggering record's Kafka timestamp to its alert being sent",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
MODEL_DRIFTS = Gauge(
    "chainwatch_model_drifts", "Drifts detected in a rule's score stream (river.drift), "
    "summed over this scorer's partitions; the label is the rule's name", ["detector"])
RULE_ERRORS = Gauge(
    "chainwatch_rule_errors", "Events a rule's detector raised on (or scored as not a finite "
    "number; such events score 0), summed over this scorer's partitions", ["rule"])
FEATURE_EVICTIONS = Gauge(
    "chainwatch_feature_evictions", "Idle keys evicted from a feature store, summed over this "
    "scorer's partitions", ["store"])
FEATURE_KEYS = Gauge(
    "chainwatch_feature_keys", "Keys a feature store tracks, summed over this scorer's "
    "partitions", ["store"])
SCORING_LATENCY = Histogram(
    "chainwatch_scoring_latency_seconds", "Time to score one polled batch, per event",
    buckets=(1e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 0.01, 0.025, 0.05, 0.1))
CONSUMER_LAG = Gauge(
    "chainwatch_consumer_lag", "Records behind the partition's high-water mark, as of the last "
    "fetch", ["topic", "partition"])
CHECKPOINT_LAST_SUCCESS = Gauge(
    "chainwatch_checkpoint_last_success_timestamp_seconds",
    "Unix time of the task's newest checkpoint (written, published, committed)", ["task"])
CHECKPOINT_SIZE = Histogram(
    "chainwatch_checkpoint_size_bytes", "Size of the state in each checkpoint written",
    buckets=(1e4, 1e5, 1e6, 4e6, 1.6e7, 6.4e7, 2.56e8, 1e9))
CHECKPOINTS_REFUSED = Counter(
    "chainwatch_checkpoints_refused", "Checkpoints refused on restore, by reason (digest, tag, "
    "untrusted, header, format, gone, state_format, state); the task fell back to an older "
    "one or started fresh", ["reason"])
TRANSACTIONS = Counter(
    "chainwatch_transactions", "Kafka transactions of scorer tasks, by outcome (committed, "
    "aborted: the task re-reads from its committed offsets)", ["outcome"])
AUDIT_LOG_SIZE = Gauge(
    "chainwatch_audit_log_size", "Leaves in the audit log (its newest signed head's size)")
AUDIT_HEAD_TIMESTAMP = Gauge(
    "chainwatch_audit_head_timestamp_seconds", "Unix time of the newest signed tree head")
AUDIT_APPEND = Histogram(
    "chainwatch_audit_append_seconds", "Time to append one batch to the audit log and sign it",
    buckets=(1e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 0.01, 0.025, 0.05, 0.1, 0.25, 1))
AUDIT_ACTIVE = Gauge(
    "chainwatch_audit_active", "1 while this auditor appends to the audit log (it holds the "
    "lease and the file lock), 0 while it stands by")
