"""An analyst's verdict on an alert, published as a label so the supervised models learn it.

``chainwatch alerts ack ID --status confirmed|false_positive`` publishes
:meth:`~pipeline.alert_store.StoredAlert.verdict_label` to ``chainwatch.labels``, keyed as
every label is (:func:`producers.sink.message_for`: by its partition key, the alert's
subject). Publishing never raises: it answers why it failed, so the command can say the
status was stored and the label was not.
"""

from __future__ import annotations

from pipeline import clients
from pipeline.records import Label
from pipeline.settings import Settings
from producers.sink import message_for

SEND_TIMEOUT_S = 10.0


def publish_label(settings: Settings, label: Label) -> str | None:
    """Send ``label`` and wait for the broker's acknowledgement: None when it is written,
    else the reason in one line."""
    try:
        producer = clients.producer(settings, linger_ms=0)
    except Exception as exc:  # unreachable broker, bad security settings
        return f"{type(exc).__name__}: {exc}"
    try:
        topic, key, value = message_for(label, settings.topics)
        producer.send(topic, value=value, key=key).get(timeout=SEND_TIMEOUT_S)
    except Exception as exc:  # the send or its acknowledgement failed
        return f"{type(exc).__name__}: {exc}"
    finally:
        producer.close(timeout=2)
    return None
