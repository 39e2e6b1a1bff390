"""The shared grammars: column types, Firehose prefix templates, EventBridge filter patterns.

Leaf modules: they import nothing from Firelake and no third-party package, so the
configuration, the agents, the sinks, the streams and the API all import them downward.
"""
