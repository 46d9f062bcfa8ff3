#!/usr/bin/env bash
# Study B on real text, end to end (about 3 hours on 2 CPU cores: three 8,000-step runs and their measures):
# Debian's translated documentation as the corpus, the in-domain lexicon from its translation catalogs,
# configs/multilingual-docs.yaml, its control in which each page appears in one language only, and the
# same with each page interleaved paragraph by paragraph with its translation; every study-B measure with
# the in-domain lexicon, WLT with the CLDR lexicon beside it, and the reports.
#   bash scripts/real-text-study.sh [OUT]       # default runs/real-text
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
out="${1:-runs/real-text}"
bash scripts/setup-debian-docs.sh
[ -f data/debian-docs/manifest.json ] || phasescope corpus build --from debian-docs -o data/debian-docs \
  --languages en,de,fr,es,tr,ru,zh,ja
mkdir -p "$out"
[ -f "$out/lexicon.parquet" ] || phasescope lexicon build --from-gettext /usr/share/locale --corpus data/debian-docs \
  --languages en,de,fr,es,tr,ru,zh,ja -o "$out/lexicon.parquet"
sed 's/parallel: include .*/parallel: one_per_page        # the control: each page in one language only/' \
  configs/multilingual-docs.yaml > "$out/multilingual-docs-no-parallel.yaml"
sed 's/parallel: include .*/parallel: interleave          # each page beside its translation, paragraph by paragraph/' \
  configs/multilingual-docs.yaml > "$out/multilingual-docs-interleave.yaml"
for run in docs:configs/multilingual-docs.yaml docs-no-parallel:"$out/multilingual-docs-no-parallel.yaml" \
           docs-interleave:"$out/multilingual-docs-interleave.yaml"; do
  name=${run%%:*}; config=${run#*:}
  phasescope train "$config" --out "$out/$name"
  mkdir -p "$out/$name/data" && cp "$out/lexicon.parquet" "$out/$name/data/lexicon.parquet"  # the in-domain WLT set
  phasescope measure "$out/$name" --measures wlt,logit_lens,lm_quality,minimal_pairs  # pairs from held-out sentences
  # the CLDR lexicon beside the in-domain one, on every second checkpoint (the report draws the config that
  # covers the most checkpoints: the in-domain one)
  phasescope measure "$out/$name" --measures wlt --checkpoints every:2 --set wlt.lexicon=cldr
  # the mechanisms on fewer prompts, as the demo measures them (8 and 4 concepts per direction)
  phasescope measure "$out/$name" --measures layer_swap,surface_similarity --checkpoints every:4 \
    --set layer_swap.max_concepts=8
  phasescope measure "$out/$name" --measures path_attribution --checkpoints every:8 \
    --set path_attribution.max_concepts=4
  phasescope report "$out/$name"
done
