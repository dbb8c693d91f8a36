"""Validation of ingested batches with Great Expectations suites stored under `expectations/`.

`validate_batch(table, records, settings)` splits a batch into good records and refused ones
(each with its reasons); `quarantine_rows` turns the refused ones into rows for the lake's
`quarantine` table. Great Expectations itself is imported only when a batch is validated.
"""

from assetmatch.quality.quarantine import quarantine_rows, redact
from assetmatch.quality.validate import (
    BadRecord,
    BatchValidation,
    ExpectationOutcome,
    SuiteError,
    validate_batch,
)

__all__ = [
    "BadRecord",
    "BatchValidation",
    "ExpectationOutcome",
    "SuiteError",
    "quarantine_rows",
    "redact",
    "validate_batch",
]
