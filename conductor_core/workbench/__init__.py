"""What a person makes in the playground, kept next to the request log.

Sessions (conversations and comparisons, with their settings and every turn), experiment
runs (a prompt template over a dataset, against 2-4 variants), blind votes and ratings,
and exports of any of them. Each module keeps its own tables in the request log's database
(`RequestLog.engine`, created with `RequestLog.ensure_tables`), linked to the log rows
(`attempts.request_id`) its answers produced, so work survives a reload and is shared by
every process on PostgreSQL. No UI imports here: the playground's pages call these.
"""
