"""Prefect flow `build-indexes`: build every recall index from a pinned lake snapshot, publish it, and
fit the coarse model and set selection on it.

Thin wiring over `assetmatch.pipeline.build_and_fit` (what `assetmatch index build` and the nightly
flow run, so an index is never published here without the coarse fit that goes with it): one task
builds (reusing cached vectors: only changed tables are embedded, unless `full`), publishes
atomically and fits; the manifest (lake versions read, counts, timings) becomes a markdown artifact
`index-manifest`. A failed build publishes nothing and the current index stays in place; the task is
retried once when its error is transient (e.g. object storage unreachable).

Runs without a Prefect server (a temporary local API starts) or against one (`PREFECT_API_URL`).
`python flows/build_indexes.py` serves it every hour, after the hourly ingest.

Dask: the build embeds its changed tables on Dask (`recall.dask_address`, else a LocalCluster) once it
has at least `recall.dask_min_tables` of them (`assetmatch.recall.distributed`); the build itself runs
where the flow runs. `on_dask(...)` is the same flow on prefect-dask's `DaskTaskRunner`: the build task
then runs on a Dask worker (which needs the lake and index root on shared storage) and fans the
embedding out over that same cluster.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from prefect import Flow, flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from assetmatch import pipeline


@task(
    name="build-index-set",
    task_run_name="build-index-set",
    retries=1,
    retry_delay_seconds=30,
    retry_condition_fn=pipeline.retry_if_transient,
)
def build_index_task(config_path: str, assets_version: int | None, full: bool) -> dict[str, Any]:
    """Build and publish one IndexSet, then fit the coarse model on it; returns its manifest."""
    settings = pipeline.settings_for_run(config_path)
    return pipeline.build_and_fit(settings, full=full, assets_version=assets_version)


def manifest_markdown(manifest: dict[str, Any]) -> str:
    """The manifest as a short report: what was read, what was built, how long it took."""
    versions = ", ".join(f"`{t}` v{v}" for t, v in manifest["lake"]["versions"].items())
    counts = "\n".join(f"| {k} | {v} |" for k, v in manifest["counts"].items())
    seconds = ", ".join(f"{k} {v:.1f} s" for k, v in manifest["build_seconds"].items())
    return "\n".join(
        [
            f"# Index `{manifest['id']}`",
            "",
            f"Lake {manifest['lake']['uri']}: {versions}",
            f"Model `{manifest['model']['id']}` (dim {manifest['model']['dim']}), dense index {manifest['dense_index']}",
            "",
            "| count | value |",
            "|---|---|",
            counts,
            "",
            f"Build: {seconds}",
            "",
            "```json",
            json.dumps(manifest["config"], indent=2),
            "```",
        ]
    )


@flow(name="build-indexes", log_prints=False)
def build_indexes(
    config_path: str | None = None, assets_version: int | None = None, full: bool = False
) -> dict[str, Any]:
    """Build the recall indexes from the lake, publish them and refit the coarse model.

    Args:
        config_path: Path of the assetmatch.yaml to run with (absolute, or relative to the repository
            root). Empty: $ASSETMATCH_CONFIG of the worker, else ./assetmatch.yaml; the run fails at
            once, writing nothing, when none exists.
        assets_version: Delta version of the `assets` table to index. Empty: the latest.
        full: Re-embed every table instead of only the changed ones.
    """
    config_path = str(pipeline.config_file(config_path))
    # submitted, not called: under a DaskTaskRunner (`on_dask`) the build then runs on a Dask worker
    manifest = build_index_task.submit(config_path, assets_version, full).result()
    create_markdown_artifact(
        markdown=manifest_markdown(manifest), key="index-manifest", description=f"index {manifest['id']}"
    )
    get_run_logger().info(
        "published index %s: %s assets, %s embedded",
        manifest["id"],
        manifest["counts"]["assets"],
        manifest["counts"]["embedded_assets"],
    )
    return manifest


def on_dask(address: str | None = None, workers: int = 2) -> Flow[..., dict[str, Any]]:
    """`build_indexes` on prefect-dask's DaskTaskRunner: the scheduler at `address`, or a temporary
    LocalCluster of `workers` single-threaded processes. The build task runs on a worker; its
    embedding uses that cluster (`worker_client`) instead of starting another one. The worker needs
    the lake, the encoder and the index root at the same paths as the flow (the project image with
    shared storage, see infra/dask/)."""
    from prefect_dask import DaskTaskRunner

    if address:
        runner = DaskTaskRunner(address=address)
    else:
        # memory_limit=0: the build itself runs on a worker and may hold the whole library
        runner = DaskTaskRunner(
            cluster_kwargs={
                "n_workers": workers,
                "threads_per_worker": 1,
                "processes": True,
                "memory_limit": 0,
                "dashboard_address": None,
            }
        )
    return build_indexes.with_options(task_runner=runner)


if __name__ == "__main__":
    config = Path("assetmatch.yaml")
    build_indexes.serve(
        name="hourly", cron="15 * * * *", parameters={"config_path": str(config) if config.exists() else None}
    )
