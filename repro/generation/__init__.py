"""The generation path: data-to-text (E2E, WebNLG, DART) and summarisation (SAMSum) with decoder LMs and
encoder-decoders (T5, BART).

`repro.pipelines.PIPELINES["generation"]` points at `repro.generation.pipeline.run_generation`.
"""
