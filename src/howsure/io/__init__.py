"""The one reader and writer of tables and scored records (files in, records and arrays out).

Import the submodules: `howsure.io.records` (pure Python), `howsure.io.scored` (the decision
commands' reader, no pandas), `howsure.io.tables`, `howsure.io.texts`, `howsure.io.scored_tables`
(pandas).
"""
