"""The generation path: data-to-text (E2E, WebNLG, DART) and summarisation (SAMSum) with decoder LMs and
encoder-decoders (T5, BART).

The task kind that trains and decodes them is `repro.kinds.generation` (`repro.kinds.kind_named("generation")`).
"""
