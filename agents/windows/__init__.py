"""Window agents' pure core (Kinesis Data Analytics): no Kafka client is imported here.

One concept per module: :mod:`~agents.windows.aggregates` (decomposable aggregates and their
exact merge), :mod:`~agents.windows.assign` (window arithmetic), :mod:`~agents.windows.watermarks`
(event-time progress per partition), :mod:`~agents.windows.batch` (a batch of envelopes as one
Arrow table, partial aggregates by DuckDB), :mod:`~agents.windows.state` (open windows,
sessions, sliding results, eviction), :mod:`~agents.windows.codec` (changelog records),
:mod:`~agents.windows.processor` (all of it per batch) and :mod:`~agents.windows.sql` (the same
definition as DuckDB SQL over the lake, for ``verify`` and ``backfill``).
"""
