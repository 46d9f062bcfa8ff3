"""The ``phasescope lexicon`` and ``phasescope corpus`` commands: building study B's data (the concept
lexicon, and real multilingual text as a corpus folder)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from phasescope.errors import PhasescopeError
from phasescope.files import check_output_path
from phasescope.progress import console, output
from phasescope.signals import rerun_command, resumable

lexicon_app = typer.Typer(help="The concept lexicon of study B (words per concept and language).",
                          no_args_is_help=True)
corpus_app = typer.Typer(help="Real multilingual text as a local-folder corpus.", no_args_is_help=True)


@lexicon_app.command("build")
def lexicon_build(languages: str = typer.Option(None, "--languages", help="Comma-separated ISO codes "
                                                "(default: en,de,fr,es,tr,ru,ar,zh,ja)."),
                  out: Path = typer.Option(Path("lexicon.parquet"), "--out", "-o", help="The Parquet file to write."),
                  from_wlt: Path = typer.Option(None, "--from-wlt", help="A word-level translation Parquet file."),
                  from_muse: Path = typer.Option(None, "--from-muse", help="A folder of MUSE en-XX.txt files."),
                  from_gettext: Path = typer.Option(None, "--from-gettext", help="gettext catalogs: a locale folder "
                                                    "such as /usr/share/locale (<locale>/LC_MESSAGES/*.mo)."),
                  corpus: Path = typer.Option(None, "--corpus", help="With --from-gettext: a corpus folder whose "
                                              "text every concept must occur in (phasescope corpus build)."),
                  max_concepts: int = typer.Option(125, "--max-concepts", min=1, help="With --from-gettext: "
                                                   "concepts kept (the reference's WLT set has 125)."),
                  ) -> None:
    """Build the concept lexicon (CLDR names from emoji and babel, translation catalogs, or the given files)."""
    from phasescope.data.lexicon_sources import build_lexicon, lexicon_summary

    check_output_path(out, folder=False)
    codes = _languages(languages)
    if corpus is not None and not corpus.is_dir():
        raise PhasescopeError(f"--corpus {corpus}: no such corpus folder (phasescope corpus build writes one)")
    if from_gettext is not None:
        from phasescope.data.gettext_lexicon import build_gettext_lexicon

        if from_wlt is not None or from_muse is not None:
            raise PhasescopeError("--from-gettext builds a lexicon of its own: give it without --from-wlt/--from-muse")
        lexicon, counts = build_gettext_lexicon(codes, from_gettext, corpus, max_concepts,
                                                progress=lambda line: console.print(line))
        import io

        from phasescope.run.atomic import atomic_write_bytes

        counts_path = out.with_name(out.stem + ".counts.parquet")
        buffer = io.BytesIO()
        counts.astype({"corpus_count": "Int64"}).to_parquet(buffer, index=False)
        counts_path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(counts_path, buffer.getvalue())
        console.print(f"per concept and language: the word, the catalogs that translate it so and its count in the "
                      f"corpus: {counts_path}")
    else:
        if corpus is not None:
            raise PhasescopeError("--corpus filters a lexicon built --from-gettext")
        lexicon = build_lexicon(codes, wlt=from_wlt, muse=from_muse)
    lexicon.save(out)
    summary = lexicon_summary(lexicon)
    table = Table("category", *map(str, summary.columns))
    for category, row in summary.iterrows():
        table.add_row(str(category), *[str(value) for value in row])
    output.print(table)
    console.print(f"{len(lexicon.concepts)} concepts ({len(lexicon.complete_concepts())} in every language) "
                  f"written to {out}")


@corpus_app.command("build")
def corpus_build(source: str = typer.Option(..., "--from", help="Where the text comes from: debian-docs."),
                 out: Path = typer.Option(..., "--out", "-o", help="The corpus folder to write (new or empty)."),
                 languages: str = typer.Option(None, "--languages", help="Comma-separated ISO codes "
                                               "(default: en,de,fr,es,tr,ru,ar,zh,ja)."),
                 sources: str = typer.Option(None, "--sources", help="Comma list of gnome-help, man, "
                                             "debian-reference, libreoffice-help, gettext (default: all but "
                                             "gettext, the interface strings the in-domain lexicon is built from)."),
                 root: list[Path] = typer.Option([Path("/")], "--root", help="File-system root the packages are "
                                                 "under; repeat it for a folder of unpacked packages "
                                                 "(scripts/setup-debian-docs.sh --libreoffice DIR)."),
                 ) -> None:
    """Turn installed Debian documentation into a corpus folder (a folder per language, a manifest and the
    parallel index); installs nothing (scripts/setup-debian-docs.sh does)."""
    from phasescope.data.debian_docs import build_debian_docs

    if source != "debian-docs":
        raise PhasescopeError(f"--from must be debian-docs, got {source!r}")
    check_output_path(out, folder=True)
    codes = _languages(languages)
    missing = [str(folder) for folder in root if not folder.is_dir()]
    if missing:
        raise PhasescopeError(f"--root {missing[0]}: no such folder (the file-system root the packages are under)")
    names = [name.strip() for name in sources.split(",") if name.strip()] if sources else None
    kept = f"nothing was written to {out} (a corpus folder appears only when complete); rerun: {rerun_command()}"
    with resumable(lambda: kept):
        report = build_debian_docs(out, codes, names, root=list(root), progress=lambda line: console.print(line))
    table = Table("language", "documents", "characters", "tokens", "packages", "dropped")
    tokens = report.tokens
    for language in report.documents:
        dropped = ", ".join(f"{reason} {count}" for reason, count in sorted(report.dropped.get(language, {}).items()))
        table.add_row(language, f"{report.documents[language]:,}", f"{report.characters[language]:,}",
                      f"{tokens[language]:,}", ", ".join(report.packages[language]), dropped)
    output.print(table)
    if report.missing:
        console.print(f"no text for: {', '.join(report.missing)}")
    console.print(f"{sum(report.documents.values()):,} documents, {report.parallel_groups:,} pages in several "
                  f"languages (parallel.jsonl), written to {out}")


def _languages(text: str | None) -> list[str] | None:
    """``--languages``: a comma list of codes; None (not given) means the default set; given empty, an error."""
    if text is None:
        return None
    codes = [code.strip() for code in text.split(",") if code.strip()]
    if not codes:
        raise PhasescopeError(f"--languages {text!r}: no language code given (e.g. --languages en,de,fr)")
    return codes
