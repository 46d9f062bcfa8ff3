"""The real-text study sized down, end to end through the command line: a corpus built from fixture
documentation pages (Mallard, roff, DocBook HTML, LibreOffice HTML) in three languages, the in-domain
lexicon from fixture gettext catalogs, a few training steps with the parallel pages included and
interleaved, every study-B measure at every checkpoint, the report, and the runs side by side."""

from __future__ import annotations

import json
import shutil

import yaml

from phasescope.data.lexicon import Lexicon
from phasescope.run import MetricStore, RunDir
from tests.debian_fixtures import (
    ENGLISH,
    FRENCH,
    GERMAN,
    LIBREOFFICE_HTML,
    mallard_page,
    write_catalogs,
    write_fixture_root,
)
from tests.helpers import phasescope_here, tiny_config, write_config
from tests.measure_fixtures import builtin_measures

INTERFACE = {"en": "Open the File menu, choose Edit or Print, and close the Window when you are done with it.",
             "de": "Öffnen Sie das Menü Datei, wählen Sie Bearbeiten oder Drucken und schließen Sie das Fenster.",
             "fr": "Ouvrez le menu Fichier, choisissez Édition ou Imprimer, puis fermez la Fenêtre ensuite."}


def fixture_machine(root):
    """Installed documentation in en, de and fr (four pages and more in each) and translation catalogs."""
    write_fixture_root(root)
    for name, suffix in (("a11y-contrast", " Contraste."), ("a11y-font", " Police."), ("a11y-keys", " Touches.")):
        path = root / "usr/share/help/fr/gnome-help" / f"{name}.page"
        path.write_text(mallard_page(name, FRENCH + suffix, "fr"), encoding="utf-8")
    for locale, language, body in (("C", "en", ENGLISH), ("de", "de", GERMAN), ("fr", "fr", FRENCH)):
        path = root / "usr/share/help" / locale / "gnome-help" / "menus.page"
        path.write_text(mallard_page("Menus", f"{INTERFACE[language]} {body}", language), encoding="utf-8")
    for locale, body in (("en-US", ENGLISH), ("de", GERMAN), ("fr", FRENCH)):
        path = root / "usr/share/libreoffice/help" / locale / "text/shared/menus.html"
        path.parent.mkdir(parents=True, exist_ok=True)
        language = {"en-US": "en"}.get(locale, locale)
        path.write_text(LIBREOFFICE_HTML.format(body=f"{INTERFACE[language]} {body}"), encoding="utf-8")
    write_catalogs(root / "usr/share/locale")


def test_the_real_text_study_sized_down(tmp_path, monkeypatch, capsys):
    fixture_machine(tmp_path / "root")

    def cli(*args):
        code, stderr = phasescope_here(monkeypatch, capsys, *args)
        assert code == 0, stderr[-2000:]

    corpus = tmp_path / "corpus"
    cli("corpus", "build", "--from", "debian-docs", "--languages", "en,de,fr", "--root", str(tmp_path / "root"),
        "-o", str(corpus))
    manifest = json.loads((corpus / "manifest.json").read_text(encoding="utf-8"))
    assert all(manifest["languages"][language]["documents"] >= 5 for language in ("en", "de", "fr"))
    lexicon_path = tmp_path / "lexicon.parquet"
    cli("lexicon", "build", "--from-gettext", str(tmp_path / "root/usr/share/locale"), "--corpus", str(corpus),
        "--languages", "en,de,fr", "-o", str(lexicon_path))
    lexicon = Lexicon.load(lexicon_path)
    assert sorted(lexicon.concepts) == ["Edit", "File", "Print", "Window"]  # each occurs in every language's text

    runs = {}
    for parallel in ("include", "interleave"):
        config = tiny_config(data={"source": "local", "root": str(corpus), "txt_unit": "file", "heldout_share": 0.2,
                                   "parallel": parallel},
                             tokenizer={"vocab_size": 300, "documents_per_language": 6})
        run = tmp_path / parallel
        cli("train", str(write_config(tmp_path / f"{parallel}.yaml", config)), "--out", str(run))
        (run / "data").mkdir(exist_ok=True)
        shutil.copy(lexicon_path, run / "data" / "lexicon.parquet")  # the in-domain WLT set, as the script does
        runs[parallel] = run
    assert [c.step for c in RunDir.open(runs["include"]).list_checkpoints()] == [0, 4, 8, 12]

    settings = {name: {"shots": 1} for name in ("wlt", "logit_lens", "layer_swap", "surface_similarity", "scaling",
                                                  "head_ablation", "path_attribution")}
    settings["path_attribution"].update(path="replay", data=["kind", "language"])
    settings["lm_quality"] = settings["lm_sharpness"] = {"seq_len": 16, "sequences": 2}
    settings["minimal_pairs"] = {"heldout_pairs": 5}
    measure_config = tmp_path / "measures.yaml"
    measure_config.write_text(yaml.safe_dump(settings), encoding="utf-8")
    store = MetricStore(RunDir.open(runs["include"]))
    cli("measure", str(runs["include"]), "--measures", "all", "--config", str(measure_config))
    for name in builtin_measures():  # every study-B measure wrote rows at every checkpoint it measures
        rows = store.read(name)
        assert not rows.empty, name
    assert sorted(store.read("wlt").step.unique()) == [0, 4, 8, 12]
    wlt = store.read("wlt")
    assert set(wlt.dropna(subset=["src"]).src) == {"en", "de", "fr"}
    pairs = store.read("minimal_pairs")
    assert set(pairs.subset) == {"heldout"}  # real text: pairs from held-out sentences, not the built-in ones
    replay = store.read("path_attribution")
    kinds = set(replay.data.dropna())
    assert {"kind=parallel"} <= kinds and replay.path.eq("replay").all()
    cli("measure", str(runs["interleave"]), "--measures", "wlt,minimal_pairs", "--config", str(measure_config))
    interleaved = MetricStore(RunDir.open(runs["interleave"])).read("wlt")
    assert sorted(interleaved.step.unique()) == [0, 4, 8, 12]
    assert not interleaved.equals(wlt)  # another training stream, another model

    cli("report", str(runs["include"]))
    page = (runs["include"] / "report" / "index.html").read_text(encoding="utf-8")
    assert "Translation, copying and linguistic ability" in page and "positive control" not in page
    cli("compare", str(runs["include"]), str(runs["interleave"]), "-o", str(tmp_path / "side.png"))
    assert (tmp_path / "side.png").stat().st_size > 10_000
