"""Tags that link an MLflow run to the Prefect flow run (and task run) that created it.

Inside a Prefect flow or task run, `prefect.runtime` knows the run's id and name; every MLflow run
assetmatch creates carries them, so the MLflow UI leads back to the Prefect run and the other way
round (the flow run's id is searchable: `tags."prefect.flow_run_id" = '...'`). Outside Prefect (the
CLI, a test) there are no such tags. Prefect is never imported here: when it is not loaded yet, no
Prefect run is going on in this process.
"""

from __future__ import annotations

import sys

FLOW_RUN_ID_TAG = "prefect.flow_run_id"
FLOW_RUN_NAME_TAG = "prefect.flow_run_name"
FLOW_NAME_TAG = "prefect.flow_name"
TASK_RUN_ID_TAG = "prefect.task_run_id"
FLOW_RUN_URL_TAG = "prefect.flow_run_url"


def prefect_run_tags() -> dict[str, str]:
    """The current Prefect flow run's id, name, flow and UI link (and task run id), or {} outside one."""
    if "prefect" not in sys.modules:
        return {}
    from prefect.runtime import flow_run, task_run

    run_id = flow_run.id
    if not run_id:
        return {}
    values = {
        FLOW_RUN_ID_TAG: run_id,
        FLOW_RUN_NAME_TAG: flow_run.name,
        FLOW_NAME_TAG: flow_run.flow_name,
        TASK_RUN_ID_TAG: task_run.id,
        FLOW_RUN_URL_TAG: flow_run.ui_url,
    }
    return {key: str(value) for key, value in values.items() if value}
