"""The generation path: data-to-text (E2E, WebNLG, DART) and summarisation (SAMSum) with decoder LMs.

`repro.pipelines.PIPELINES["generation"]` points at `repro.generation.pipeline.run_generation`.
"""
