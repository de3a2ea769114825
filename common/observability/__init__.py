"""What an operator sees of the services: metrics, traces and logs.

context.py holds the event being handled, so that what a handler emits or logs names
its saga, cause and trace. metrics.py: the Prometheus metrics and the gauges read from
the database at scrape time. tracing.py: OpenTelemetry spans, one trace per order.
logs.py: JSON log lines stamped with the saga and trace, written in batches.
"""
