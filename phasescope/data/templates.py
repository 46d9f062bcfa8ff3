"""The sentence-template bank of the controlled corpus: one frame, rendered in each of nine languages.

A :class:`Template` is one meaning (a caption, a question, a shopping list, ...) written in each
language's own word order: SVO in en/fr/es/ru, verb-second in de, SOV with postpositions and
case suffixes in tr and ja (``{X}を探しています``), nominal sentences in ar (``في الصورة {X}``), zh
with its own particles (``我在找{X}。``). Because every language renders the same frames, a
document can be re-rendered in another language: the parallel documents of the corpus.

The slot ``{X}`` receives a lexicon word in its citation form, so every frame is one where the
citation form is grammatical and nothing must agree with the noun:

- en: ``the {X}`` or ``a new {X}`` (never ``a``/``an`` before the noun);
- de, fr, es, whose articles agree in gender: captions, labels and lists (``Gesucht: {X}.``,
  ``Au menu aujourd'hui : {X}.``), apposition after a fixed noun (``das Wort „{X}“``), and
  constructions without article (``Sie spricht {X}``, ``im {X}`` for masculine months);
- ru: the nominative (``Где {X}?``, ``На картинке {X}.``, ``Тема дня: {X}.``);
- tr: the indefinite nominative (``Bir {X} arıyorum``), ``ile`` as a separate word, no suffix on
  the noun (so no vowel harmony is needed);
- ar: indefinite nominatives and genitives after prepositions, which are written alike without
  diacritics (``أبحث عن {X}``); never an accusative, which needs a written tanween alif;
- ja: ``が``/``を``/``は`` after the noun; animate nouns (animals) only in frames with ``いる``.

``categories`` restricts a frame to lexicon categories (None: any category); ``second`` says how
``{Y}`` is filled: ``"other"`` another concept of the same category, ``"next"`` the next concept
of the category in lexicon order (January -> February, cyclic).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from phasescope.data.languages import SPACELESS_LANGUAGES

THING_CATEGORIES = frozenset({"animal", "plant", "food", "body", "person", "clothing", "transport", "place",
                              "music", "sport", "nature", "object"})
INANIMATE_GOODS = frozenset({"object", "food", "clothing", "music", "sport", "transport", "plant"})


@dataclass(frozen=True)
class Template:
    """One frame: ``text[language]`` holds ``{X}`` (and ``{Y}`` when ``second`` is set)."""

    name: str
    text: dict[str, str]
    categories: frozenset[str] | None = None  # None: any category
    second: Literal["other", "next"] | None = None

    def fits(self, category: str) -> bool:
        return self.categories is None or category in self.categories


TEMPLATES: tuple[Template, ...] = (
    # ---- any category: labels and mentions of the word itself
    Template("topic", {
        "en": "Today's topic: {X}.", "de": "Unser Thema heute: {X}.", "fr": "Le thème du jour : {X}.",
        "es": "El tema de hoy: {X}.", "tr": "Bugünün konusu: {X}.", "ru": "Тема дня: {X}.",
        "ar": "موضوع اليوم: {X}.", "zh": "今天的话题：{X}。", "ja": "今日のテーマ：{X}。"}),
    Template("choice", {
        "en": "{X} or {Y}? A hard choice.", "de": "{X} oder {Y}? Eine schwere Wahl.",
        "fr": "{X} ou {Y} ? Un choix difficile.", "es": "¿{X} o {Y}? Una elección difícil.",
        "tr": "{X} ya da {Y}? Zor bir seçim.", "ru": "{X} или {Y}? Трудный выбор.",
        "ar": "{X} أم {Y}؟ اختيار صعب.", "zh": "{X}还是{Y}？真难选。", "ja": "{X}か{Y}か、迷います。"},
        second="other"),
    Template("word", {
        "en": 'Everybody knows the word "{X}".', "de": "Das Wort „{X}“ kennt jeder.",
        "fr": "Tout le monde connaît le mot « {X} ».", "es": "Todo el mundo conoce la palabra «{X}».",
        "tr": '"{X}" kelimesini herkes bilir.', "ru": "Слово «{X}» знают все.",
        "ar": 'الجميع يعرف كلمة "{X}".', "zh": "大家都知道“{X}”这个词。",
        "ja": "「{X}」という言葉はだれでも知っています。"}),
    # ---- things (the emoji categories)
    Template("picture", {
        "en": "In the picture you can see the {X}.", "de": "Auf dem Bild zu sehen: {X}.",
        "fr": "Sur la photo : {X}.", "es": "En la foto: {X}.", "tr": "Resimde bir {X} var.",
        "ru": "На картинке {X}.", "ar": "في الصورة {X}.", "zh": "照片里有{X}。", "ja": "写真に{X}が写っています。"},
        categories=THING_CATEGORIES),
    Template("search", {
        "en": "I am looking for the {X}.", "de": "Gesucht: {X}.", "fr": "Recherche : {X}.",
        "es": "Se busca: {X}.", "tr": "Bir {X} arıyorum.", "ru": "Где {X}?", "ar": "أبحث عن {X}.",
        "zh": "我在找{X}。", "ja": "{X}を探しています。"},
        categories=THING_CATEGORIES),
    Template("favourite", {
        "en": "I really like the {X}.", "de": "Ganz oben auf meiner Liste: {X}.",
        "fr": "En tête de ma liste : {X}.", "es": "Lo primero de mi lista: {X}.",
        "tr": "{X} çok hoşuma gidiyor.", "ru": "Первое в моём списке — {X}.", "ar": "أول شيء في قائمتي: {X}.",
        "zh": "我很喜欢{X}。", "ja": "{X}が大好きです。"},
        categories=THING_CATEGORIES - {"body"}),
    Template("shop", {
        "en": "We have a new {X} in the shop.", "de": "Neu bei uns: {X}.", "fr": "Nouveau chez nous : {X}.",
        "es": "Novedad en la tienda: {X}.", "tr": "Dükkânda yeni bir {X} var.", "ru": "У нас есть {X}.",
        "ar": "عندنا {X}.", "zh": "我们店里有{X}。", "ja": "店に{X}があります。"},
        categories=INANIMATE_GOODS),
    Template("animal_of_the_month", {
        "en": "This month's animal is the {X}.", "de": "Tier des Monats: {X}.", "fr": "Animal du mois : {X}.",
        "es": "Animal del mes: {X}.", "tr": "Ayın hayvanı: {X}.", "ru": "Животное месяца — {X}.",
        "ar": "حيوان الشهر: {X}.", "zh": "本月动物：{X}。", "ja": "今月の動物は{X}です。"},
        categories=frozenset({"animal"})),
    Template("zoo", {
        "en": "The zoo has a new {X}.", "de": "Neu im Zoo: {X}.", "fr": "Nouveau au zoo : {X}.",
        "es": "Nuevo en el zoo: {X}.", "tr": "Hayvanat bahçesinde bir {X} gördük.", "ru": "В зоопарке живёт {X}.",
        "ar": "في حديقة الحيوان {X}.", "zh": "动物园里有{X}。", "ja": "動物園に{X}がいます。"},
        categories=frozenset({"animal"})),
    Template("menu", {
        "en": "On the menu today: {X}.", "de": "Heute auf der Speisekarte: {X}.",
        "fr": "Au menu aujourd'hui : {X}.", "es": "Hoy en el menú: {X}.", "tr": "Bugün menüde {X} var.",
        "ru": "Сегодня в меню {X}.", "ar": "على قائمة الطعام اليوم: {X}.", "zh": "今天的菜单上有{X}。",
        "ja": "今日のメニューは{X}です。"},
        categories=frozenset({"food"})),
    Template("shopping_list", {
        "en": "Shopping list: {X}, {Y}.", "de": "Einkaufsliste: {X}, {Y}.", "fr": "Liste de courses : {X}, {Y}.",
        "es": "Lista de la compra: {X}, {Y}.", "tr": "Alışveriş listesi: {X}, {Y}.",
        "ru": "Список покупок: {X}, {Y}.", "ar": "قائمة المشتريات: {X}، {Y}.", "zh": "购物清单：{X}、{Y}。",
        "ja": "買い物リスト：{X}、{Y}。"},
        categories=frozenset({"food"}), second="other"),
    Template("transport", {
        "en": "We travelled by {X}.", "de": "Verkehrsmittel der Wahl: {X}.", "fr": "Moyen de transport : {X}.",
        "es": "Medio de transporte: {X}.", "tr": "Şehre {X} ile gittik.", "ru": "Наш транспорт — {X}.",
        "ar": "وسيلة النقل: {X}.", "zh": "交通工具：{X}。", "ja": "{X}で町へ行きました。"},
        categories=frozenset({"transport"})),
    # ---- months
    Template("birthday", {
        "en": "My birthday is in {X}.", "de": "Ich habe im {X} Geburtstag.", "fr": "Mon anniversaire est en {X}.",
        "es": "Mi cumpleaños es en {X}.", "tr": "Doğum günüm {X} ayında.", "ru": "Мой любимый месяц — {X}.",
        "ar": "عيد ميلادي في شهر {X}.", "zh": "我的生日在{X}。", "ja": "私の誕生日は{X}です。"},
        categories=frozenset({"month"})),
    Template("holidays", {
        "en": "The holidays start in {X}.", "de": "Die Ferien beginnen im {X}.",
        "fr": "Les vacances commencent en {X}.", "es": "Las vacaciones empiezan en {X}.",
        "tr": "Tatil {X} ayında başlıyor.", "ru": "Лучший месяц для отпуска — {X}.",
        "ar": "تبدأ العطلة في شهر {X}.", "zh": "假期从{X}开始。", "ja": "休みは{X}に始まります。"},
        categories=frozenset({"month"})),
    Template("next_month", {
        "en": "After {X} comes {Y}.", "de": "Nach dem {X} kommt der {Y}.", "fr": "Après {X} vient {Y}.",
        "es": "Después de {X} viene {Y}.", "tr": "{X} ayından sonra {Y} ayı gelir.",
        "ru": "Сначала {X}, потом {Y}.", "ar": "بعد شهر {X} يأتي شهر {Y}.", "zh": "{X}之后是{Y}。",
        "ja": "{X}の次は{Y}です。"},
        categories=frozenset({"month"}), second="next"),
    # ---- weekdays
    Template("see_you", {
        "en": "See you on {X}!", "de": "Bis {X}!", "fr": "À {X} !", "es": "¡Hasta el {X}!",
        "tr": "{X} görüşürüz!", "ru": "Мой любимый день недели — {X}.", "ar": "أراك يوم {X}!",
        "zh": "{X}见！", "ja": "また{X}に会いましょう。"},
        categories=frozenset({"weekday"})),
    Template("today", {
        "en": "Today is {X}.", "de": "Heute ist {X}.", "fr": "Aujourd'hui, c'est {X}.", "es": "Hoy es {X}.",
        "tr": "Bugün {X}.", "ru": "Сегодня {X}.", "ar": "اليوم هو يوم {X}.", "zh": "今天是{X}。",
        "ja": "今日は{X}です。"},
        categories=frozenset({"weekday"})),
    Template("next_weekday", {
        "en": "After {X} comes {Y}.", "de": "Nach dem {X} kommt der {Y}.", "fr": "Après {X} vient {Y}.",
        "es": "Después del {X} viene el {Y}.", "tr": "{X} gününden sonra {Y} gelir.",
        "ru": "Сначала {X}, потом {Y}.", "ar": "بعد يوم {X} يأتي يوم {Y}.", "zh": "{X}之后是{Y}。",
        "ja": "{X}の次は{Y}です。"},
        categories=frozenset({"weekday"}), second="next"),
    # ---- territories
    Template("destination", {
        "en": "Destination of the month: {X}.", "de": "Reiseziel des Monats: {X}.",
        "fr": "Destination du mois : {X}.", "es": "Destino del mes: {X}.", "tr": "Ayın rotası: {X}.",
        "ru": "Направление месяца — {X}.", "ar": "وجهة الشهر: {X}.", "zh": "本月目的地：{X}。",
        "ja": "今月の旅行先は{X}です。"},
        categories=frozenset({"territory"})),
    Template("beautiful_country", {
        "en": "{X} is a beautiful country.", "de": "Reisetipp: {X}, ein schönes Land.",
        "fr": "Idée de voyage : {X}, un beau pays.", "es": "Idea de viaje: {X}, un país precioso.",
        "tr": "{X} güzel bir ülke.", "ru": "{X} — красивая страна.", "ar": "{X} بلد جميل.",
        "zh": "{X}是一个美丽的国家。", "ja": "{X}は美しい国です。"},
        categories=frozenset({"territory"})),
    Template("origin", {
        "en": "Country of origin: {X}.", "de": "Herkunftsland: {X}.", "fr": "Pays d'origine : {X}.",
        "es": "País de origen: {X}.", "tr": "Menşe ülke: {X}.", "ru": "Страна происхождения: {X}.",
        "ar": "بلد المنشأ: {X}.", "zh": "原产国：{X}。", "ja": "原産国：{X}。"},
        categories=frozenset({"territory"})),
    # ---- language names
    Template("native_language", {
        "en": "Her native language is {X}.", "de": "Ihre Muttersprache ist {X}.", "fr": "Langue maternelle : {X}.",
        "es": "Su lengua materna es el {X}.", "tr": "Ana dili {X}.", "ru": "Её родной язык — {X}.",
        "ar": "لغتها الأم هي {X}.", "zh": "她的母语是{X}。", "ja": "彼女の母語は{X}です。"},
        categories=frozenset({"language"})),
    Template("fluent", {
        "en": "My neighbour speaks {X} fluently.", "de": "Mein Nachbar spricht fließend {X}.",
        "fr": "Mon voisin parle couramment {X}.", "es": "Mi vecino habla {X} con fluidez.",
        "tr": "Komşum akıcı bir şekilde {X} konuşuyor.", "ru": "Мой сосед хорошо знает {X}.",
        "ar": "جاري يتكلم {X} بطلاقة.", "zh": "我的邻居说一口流利的{X}。", "ja": "隣の人は{X}がぺらぺらです。"},
        categories=frozenset({"language"})),
)
TEMPLATE_LANGUAGES = ("en", "de", "fr", "es", "tr", "ru", "ar", "zh", "ja")
TEMPLATES_BY_NAME = {template.name: template for template in TEMPLATES}


def templates_for(category: str) -> list[Template]:
    """Every template whose ``{X}`` accepts a concept of ``category`` (at least the three generic ones)."""
    return [template for template in TEMPLATES if template.fits(category)]


def capitalize_sentence(sentence: str, language: str) -> str:
    """Upper-case the first letter of a sentence that starts with a lower-case word (after ``¿``, ``«``...)."""
    match = re.search(r"[^\W\d_]", sentence)
    if match is None or match.start() > 2 or not sentence[match.start()].islower():
        return sentence
    letter = sentence[match.start()]
    upper = {"i": "İ", "ı": "I"}.get(letter, letter.upper()) if language == "tr" else letter.upper()
    return sentence[:match.start()] + upper + sentence[match.start() + 1:]


def render(template: Template, language: str, x: str, y: str | None = None) -> str:
    """The sentence of ``template`` in ``language`` with ``x`` (and ``y``) in the slots, capitalized."""
    text = template.text[language].replace("{X}", x)
    if template.second is not None:
        assert y is not None, f"template {template.name!r} needs a second word"
        text = text.replace("{Y}", y)
    return capitalize_sentence(text, language)


def join_sentences(sentences: list[str], language: str) -> str:
    """Sentences as running text: separated by a space, or by nothing in Chinese and Japanese."""
    return ("" if language in SPACELESS_LANGUAGES else " ").join(sentences)


def gloss(word: str, translation: str, language: str) -> str:
    """A code-switched mention: the word followed by its translation in parentheses."""
    return f"{word}({translation})" if language in SPACELESS_LANGUAGES else f"{word} ({translation})"
