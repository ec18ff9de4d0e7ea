"""The report page (repro.report) read as a reader would: built from a synthetic runs folder and the tables
`repro.tables` makes from it, the HTML is parsed and every image, link and in-page anchor it refers to must resolve;
every table section is there, a cell without runs says "missing", verdicts are shown, a table whose CSV is absent is
shown as missing; cells are coloured by their difference from the paper. With a headless Chromium on the PATH, the
page is rendered to a PNG that must not be blank."""

from __future__ import annotations

import json
import shutil
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import pandas as pd
import pytest

from repro import report
from repro.results import RESULT_FILE, write_json_atomic
from repro.tables import build as build_tables
from tests.test_tables import _record

SECTIONS = ("table2", "rank", "targets", "table3", "table13", "table14", "samsum", "table18", "learning_curve",
            "lora_variants", "curves", "table7", "bench", "provenance", "runs", "glance", "legend")


class Page(HTMLParser):
    """What a reader follows on the page: image sources, links, anchors, and cells with their class and text."""

    def __init__(self):
        super().__init__()
        self.images, self.links, self.ids, self.cells, self.tables, self.verdicts = [], [], set(), [], 0, []
        self._cell, self._verdict = None, None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "id" in attrs:
            self.ids.add(attrs["id"])
        if tag == "img":
            self.images.append(attrs.get("src", ""))
        elif tag == "a" and "href" in attrs:
            self.links.append(attrs["href"])
        elif tag == "table":
            self.tables += 1
        elif tag == "td":
            self._cell = {"class": attrs.get("class", ""), "style": attrs.get("style", ""), "text": ""}
            self.cells.append(self._cell)
        elif tag == "span" and "verdict" in (attrs.get("class") or ""):
            self._verdict = ""

    def handle_endtag(self, tag):
        if tag == "td":
            self._cell = None
        elif tag == "span" and self._verdict is not None:
            self.verdicts.append(self._verdict.strip())
            self._verdict = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell["text"] += data
        if self._verdict is not None:
            self._verdict += data


def _with_epochs(root: Path, name: str, values: list[float]) -> None:
    """Give a synthetic record per-epoch train loss and dev metric, as repro.train stores them."""
    record = json.loads((root / name / RESULT_FILE).read_text())
    metric = record["main_metric"]
    record["epochs"] = [{"epoch": i + 1, "train_loss": 1.0 / (i + 1), "metrics": {metric: v}}
                        for i, v in enumerate(values)]
    record.update(git_commit="abc123", started_at=f"2026-12-0{1 + record['seed']}T10:00:00+00:00",
                  versions={"torch": "2.x"}, hardware={"device": "cpu", "cpu_count": 2})
    write_json_atomic(root / name / RESULT_FILE, record)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A results folder: Table 2 runs on RTE (LoRA 3 seeds, FT 2 seeds), a rank sweep, the tables repro.tables
    writes from them, a Table 7 CSV, a heatmap, a latency benchmark; samsum.csv removed and table13.csv emptied
    (shown missing), one FT run moved away after the tables were built (the table no longer matches the runs)."""
    base = tmp_path_factory.mktemp("results")
    runs = base / "runs"
    for seed, v in enumerate([0.80, 0.84, 0.82]):
        _record(runs, f"lora_rte_{seed}", row="roberta_base.lora", task="rte", paper_task="RTE", seed=seed, value=v,
                trainable=300, baseline=0.527)
        _with_epochs(runs, f"lora_rte_{seed}", [v - 0.1, v])
    for seed, v in enumerate([0.81, 0.83]):
        _record(runs, f"ft_rte_{seed}", row="roberta_base.ft", task="rte", paper_task="RTE", seed=seed, value=v,
                trainable=100_000, baseline=0.527)
        _with_epochs(runs, f"ft_rte_{seed}", [v])
    for r, v in ((1, 0.6), (8, 0.7)):
        _record(runs, f"rank_{r}", row=None, task="rte", paper_task="RTE", seed=0, value=v, trainable=r, r=r,
                targets=("q",), sweep="rank")
    for task, paper_task in (("mrpc", "MRPC"), ("sst2", "SST-2")):  # two tasks' learning curves, a file set each
        _record(runs, f"curve_{task}", row=None, task=task, paper_task=paper_task, seed=0, value=0.7, trainable=300,
                sweep="learning_curve", train_examples=500)
    tables = base / "tables"
    build_tables(runs, tables)
    (tables / "samsum.csv").unlink()
    (tables / "table13.csv").write_text("")  # truncated: shown as unreadable, the rest of the page still built
    shutil.move(runs / "ft_rte_1", base / "ft_rte_1")  # the table has 2 FT seeds, the runs folder now 1
    pd.DataFrame({"quantity": ["||U^T W V^T||_F"], "ours r=8: dW": [0.7], "paper r=4: dW_q": [0.32]}).to_csv(
        tables / "table7_test.csv", index=False)
    figures = base / "figures"
    figures.mkdir()
    shutil.copyfile(tables / "rank.png", figures / "subspace_test_A_layer3.png")
    bench = base / "bench"
    bench.mkdir()
    pd.DataFrame({"setting": ["1x128", "1x128"], "variant": ["base", "lora_merged"], "mean_ms": [10.0, 10.1],
                  "std_ms": [0.1, 0.2], "paper_ms": [19.8, 19.8]}).to_csv(bench / "latency_test.csv", index=False)
    out = base / "report"
    report.main(["--runs", str(runs), "--tables", str(tables), "--figures", str(figures), "--bench", str(bench),
                 "--out", str(out), "--no-pdf"])
    page = Page()
    page.feed((out / "index.html").read_text(encoding="utf-8"))
    return {"base": base, "out": out, "page": page}


def test_learning_curves_of_every_task_are_shown(built, tmp_path):
    page = built["page"]
    for task in ("mrpc", "sst2"):
        assert any(link.endswith(f"learning_curve_{task}.md") for link in page.links), task
        assert any(src.endswith(f"learning_curve_{task}.png") for src in page.images), task
    # with only MRPC's curve runs at hand, SST-2's committed curve is shown, not called stale
    runs = tmp_path / "runs"
    shutil.copytree(built["base"] / "runs" / "curve_mrpc", runs / "curve_mrpc")
    out = tmp_path / "report"
    report.main(["--runs", str(runs), "--tables", str(built["base"] / "tables"), "--out", str(out), "--no-pdf"])
    html = (out / "index.html").read_text(encoding="utf-8")
    assert "learning_curve_sst2.md" in html and "do not match learning_curve" not in html
    # a second MRPC seed under --runs: MRPC's curve (1 seed) no longer matches them, and the page says so
    _record(runs, "curve_mrpc_s1", row=None, task="mrpc", paper_task="MRPC", seed=1, value=0.7, trainable=300,
            sweep="learning_curve", train_examples=500)
    report.main(["--runs", str(runs), "--tables", str(built["base"] / "tables"), "--out", str(out), "--no-pdf"])
    html = (out / "index.html").read_text(encoding="utf-8")
    assert "do not match learning_curve_&lt;task&gt;.csv in 1 cell(s) (e.g. mrpc · lora · 500 examples" in html


def test_every_image_link_and_anchor_resolves(built):
    page, out = built["page"], built["out"]
    assert len(page.images) >= 4  # curve cards, rank/targets plots, heatmap, latency chart
    for src in page.images:
        assert not src.startswith(("/", "http")), src  # beside the page, so the folder can be moved or sent
        assert (out / unquote(src)).is_file(), f"image {src} does not resolve"
    assert any(link.startswith("#cell-") for link in page.links)  # cells link to their learning curves
    for link in page.links:
        if link.startswith("#"):
            assert link[1:] in page.ids, f"anchor {link} has no target"
        else:
            assert not link.startswith(("/", "http")), link
            assert (out / unquote(link)).exists(), f"link {link} does not resolve"
    run_links = [link for link in page.links if "lora_rte_0" in link]
    assert run_links and all((out / link).is_dir() for link in run_links)  # links to the run folders
    table_files = [link for link in page.links if link.endswith(("table2.md", "table2.csv", "table7_test.csv"))]
    assert len(table_files) == 3


def test_every_table_section_missing_cells_and_verdicts(built):
    page = built["page"]
    assert set(SECTIONS) <= page.ids
    assert page.tables >= 6  # Table 2, Table 6, the summary, Table 7, the benchmark, the runs
    lora_rte = next(c for c in page.cells if c["text"].startswith("82.0±2.0 [3, 3 rising] / 86.6"))  # seed count shown
    assert "background" in lora_rte["style"] and "value" in lora_rte["class"]
    mnli = [c for c in page.cells if c["class"] == "missing" and "— / 87.5" in c["text"]]
    assert mnli and all(c["text"].startswith("missing") for c in mnli)  # no run: visibly missing
    baseline = next(c for c in page.cells if c["class"] == "baseline" and c["text"].strip() == "52.7")
    assert baseline  # the trivial-baseline row
    assert "inconclusive" in page.verdicts and "holds" in page.verdicts  # Table 2's claims, judged from the runs
    assert "not testable" in page.verdicts  # Table 6: no run at the reference rank
    html = (built["out"] / "index.html").read_text(encoding="utf-8")
    assert "do not match table2.csv in 1 cell(s) (e.g. roberta_base.ft · RTE: 2 seed(s) in the table, 1 under" in html
    assert "no samsum.csv under" in html and "table13.csv is unreadable (EmptyDataError)" in html  # an absent table is shown as missing, not hidden
    assert "Verdict rule v2 (conf/paper/verdict_rule.yaml)" in html
    glance = html[html.index('id="glance"'):html.index('id="legend"')]
    assert "Targets at scale cpu" in glance and "RTE &gt;= 58: roberta_base.lora 82.0 [3] met" in glance
    assert "abc123" in html and "2026-12-01T10:00 to 2026-12-03T10:00 UTC" in html  # provenance from the runs


def test_curves_one_figure_per_cell(built):
    curves = sorted((built["out"] / "curves").glob("*.png"))
    # Table 2: LoRA and FT on RTE; the rank sweep: r=1 and r=8; the learning curves: MRPC and SST-2 (targets,
    # lora_variants ... have no runs)
    assert len(curves) == 6 and all(p.stat().st_size > 2000 for p in curves)


def test_embed_makes_one_file_and_tables_only_page(built, tmp_path):
    """--embed: every figure inside the page. Without runs the tables still show, and what needs runs says so."""
    base = built["base"]
    out = tmp_path / "page"
    report.build(tmp_path / "absent", base / "tables", out, None, base / "bench", embed=True, pdf=False)
    page = Page()
    page.feed((out / "index.html").read_text(encoding="utf-8"))
    assert page.images and all(src.startswith("data:image/png;base64,") for src in page.images)
    html = (out / "index.html").read_text(encoding="utf-8")
    assert "No runs folder" in html and "82.0±2.0 [3, 3 rising] / 86.6" in html
    assert "claims are judged from per-seed values" in html  # verdicts need the runs: shown missing


def test_bad_paths_are_one_line_errors(built, tmp_path, capsys):
    for args in (["--tables", str(tmp_path / "nope")], ["--runs", str(tmp_path / "nope"), "--tables",
                                                         str(built["base"] / "tables")]):
        with pytest.raises(SystemExit) as exc:
            report.main([*args, "--out", str(tmp_path / "o"), "--no-pdf"])
        assert exc.value.code == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and "\n" not in err


def test_colour_scale_sign_and_clip():
    colours = report.Colours.from_config(report.report_config())
    assert report.relative_percent(90.0, 100.0) == pytest.approx(-10.0)
    assert report.relative_percent(1.0, None) is None and report.relative_percent(1.0, 0.0) is None
    below, above = colours.of(-20), colours.of(20)
    assert int(below[1:3], 16) > int(below[5:7], 16)  # below the paper: red
    assert int(above[5:7], 16) > int(above[1:3], 16)  # above: blue
    assert colours.of(-1000) == colours.of(-colours.limit)  # clipped


def test_chromium_renders_a_page_that_is_not_blank(built, tmp_path):
    chromium = report.find_chromium()
    if chromium is None:
        pytest.skip("no headless Chromium on the PATH (chromium / chromium-browser / google-chrome; Debian: "
                    "apt-get install chromium)")
    shot = tmp_path / "page.png"
    assert report.print_page(chromium, built["out"] / "index.html", shot, "png", window="1200,1600")
    from matplotlib.image import imread

    pixels = imread(shot)[..., :3]
    assert pixels.shape[0] >= 1000
    ink = (pixels < 0.9).any(axis=-1).mean()  # share of pixels that are not (near) white
    assert ink > 0.02, f"the rendered page is blank ({ink:.3%} non-white pixels)"
