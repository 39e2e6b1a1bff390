"""The AWS-compatible front door: Kinesis, Firehose and Glue over the AWS JSON 1.1 protocol.

It sits above ``streams/`` and ``sinks/`` (and later ``queries/``): it is the one place that
joins them, since a Firehose delivery stream is both a stream and a sink. ``api.server``
mounts it beside the native ingest API on one port.
"""
