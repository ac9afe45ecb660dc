"""What a person makes in the playground, kept next to the request log.

Sessions (conversations and comparisons, with their settings and every turn), experiment
runs (a prompt template over a dataset, against 2-4 variants), blind votes and ratings,
and exports of any of them. Each module keeps its own tables in the request log's database
(`RequestLog.engine`; the store's migrations create them, `RequestLog.require_tables` checks
they exist: a new table or column is a migration, see the README), linked to the log rows
(`attempts.request_id`) its answers produced, so work survives a reload and is shared by
every process on PostgreSQL. No UI imports here: the playground's pages call these.

    variants.py      Variant: provider, model and settings; labels that say what differs
    sessions.py      chats and comparisons: lanes (variants), turns, answer alternatives, branches
    streaming.py     AnswerWorker: answers streamed by the process into the sessions store; Stop
    templates.py     {{variable}} prompts (exact, nothing evaluated)
    datasets.py      CSV / JSONL to rows; errors that name the line; the row limit
    dataset_store.py saved datasets: names, immutable versions, rows added from real traffic, export
    experiments.py   experiments, runs and cells in SQL; per-variant statistics; run-to-run changes
    runner.py        start_run: rows x variants, a limit per provider, progress, Stop; judges
                     after each answer (rubric checks); start_pairwise: two variants judged per row
    judging.py       model-graded checks: the judge's prompt and call (through the router),
                     its verdict's schema, pairwise with the order swapped, agreement and kappa
    arena.py         blind matches, votes, reveals
    ratings.py       Bradley-Terry with bootstrap intervals: the leaderboard (people's votes, or
                     judges' votes, never both in one)
    preference.py    the ratings AUTO's `preferred` policy reads: cached, refitted in the background
    evaluation.py    the prompts' pass rates AUTO's `evaluated` policy reads: cached, reloaded in the background
    refreshed.py     the cache both read through: a request reads memory; checks run in the background
    exports.py       Markdown / JSON / self-contained HTML; report_charts.py draws its charts
    codegen.py       "Get code": openai client via the gateway, the provider's SDK, curl
"""
