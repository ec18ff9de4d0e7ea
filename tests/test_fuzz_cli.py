"""Property-based fuzzing of `python -m repro.train`'s command line (hypothesis): random override combinations
(known and unknown keys; numbers, text, lists, paths, unicode), single runs and sweeps, go through everything that
`repro.train._main` runs before it hands over to Hydra (group choices, composing and validating every job, the
device, data and results-folder checks). Each is either accepted or refused with exit status 2 and exactly one
`error:` line; never a traceback, never a file written. REPRO_FUZZ_EXAMPLES sets the count (default 1000)."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from repro import train

EXAMPLES = int(os.environ.get("REPRO_FUZZ_EXAMPLES", "1000"))

KEYS = ["seed", "task", "model", "method", "scale", "task.name", "model.name", "method.name", "method.r",
        "method.alpha", "method.targets", "method.dropout", "method.learning_rate", "train.learning_rate",
        "train.epochs", "train.batch_size", "train.warmup_ratio", "train.precision", "train.lr_schedule",
        "train.device", "train.early_stopping_patience", "data.max_train_samples", "data.max_seq_len",
        "data.root", "model.pooling", "train.max_grad_norm", "init_from_task", "no.such.key", "+extra", "~seed"]
GROUP_VALUES = {"task": ["glue/sst2", "glue/rte", "e2e", "glue/nope", "../../x"],
                "model": ["tiny-bert", "minilm-l6", "gpt5", "tiny-gpt2"],
                "method": ["lora", "full_ft", "bitfit", "adapter_h", "prefix_layer", "lorax"],
                "scale": ["smoke", "cpu", "paper", "huge"]}

text = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)
scalar = st.one_of(st.integers(-10**6, 10**6).map(str), st.floats(allow_nan=True, allow_infinity=True).map(repr),
                   st.sampled_from(["null", "true", "false", "", "abc", "1e-3", "-0", "/tmp/x", "../../up", "ünï©ødé",
                                    "[q,v]", "[q,q]", "[]", "[q,k,v,o]", "${oc.env:HOME}", "{a: 1}"]),
                   text)


@st.composite
def override(draw) -> str:
    key = draw(st.sampled_from(KEYS))
    values = GROUP_VALUES.get(key)
    value = draw(st.sampled_from(values)) if values and draw(st.booleans()) else draw(scalar)
    return f"{key}={value}"


@train.exit_on_user_error
def before_hydra(argv: list[str]) -> None:
    """What `repro.train._main` checks before Hydra starts (and before it writes anything)."""
    train.check_group_overrides(argv)
    train.check_command_line(argv)


def test_random_overrides_are_accepted_or_refused_in_one_line(data_root, tmp_path, monkeypatch, capsys):
    results = tmp_path / "results"
    monkeypatch.setenv("REPRO_RESULTS", str(results))
    monkeypatch.setenv("REPRO_DATA_ROOT", str(data_root))
    outcomes = {"accepted": 0, "refused": 0}

    @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,  # the same examples every run
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    @given(st.lists(override(), min_size=1, max_size=4), st.booleans())
    def check(overrides, multirun):
        argv = (["-m"] if multirun else []) + ["model=tiny-bert", "scale=smoke", *overrides]
        capsys.readouterr()
        try:
            before_hydra(argv)
        except SystemExit as exc:
            err = capsys.readouterr().err
            lines = [line for line in err.splitlines() if line.strip()]
            assert exc.code == 2, (argv, err)
            assert len(lines) == 1 and lines[0].startswith("error: "), (argv, err)
            outcomes["refused"] += 1
        else:
            outcomes["accepted"] += 1
        assert not results.exists(), argv  # checked, accepted or not: nothing written yet

    check()
    print(f"fuzz: {sum(outcomes.values())} command lines, {outcomes['accepted']} accepted, "
          f"{outcomes['refused']} refused")
    assert outcomes["accepted"] and outcomes["refused"]  # both paths were exercised
