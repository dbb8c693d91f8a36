"""The sample warehouse and the end-to-end demo behind `assetmatch demo`.

- `warehouse.build_demo(dir, seed=..., reference_date=...) -> DemoPaths`: generate the files
  (also used by tests and benchmarks of other stages);
- `pipeline.STEPS` / `pipeline.run_steps(ctx)`: the demo's ordered, named steps;
- `catalog`, `intents`, `sqlgen`, `sampledata`: what the generator is made of.
"""
