"""Person names found by lists rather than by NER: the English NER model
misses names it never saw (Małgorzata Wiśniewska, Siddharth Venkataraman)
and cannot read other scripts at all.

Two sources. First and last names of 100+ countries from names-dataset (an
optional extra, ``pip install protege[names]``): its 55 MB of pickles take
~10 s and ~1 GB to load, so the names that rank among a country's most
common are extracted once (~7 s) into a 1 MB cached file, and that file is
what later processes load (~0.4 s, ~60 MB). Without the extra the lists are
empty and NER and the cue rules do the work. Second, the common family
names of Chinese, Japanese and Korean, which names-dataset has mostly in
Latin letters; those scripts write a name as one run of characters, so a
run that starts with a family name and stands alone in other-script text
is a name.

A Latin-script pair is a name when its first word is a known first name
and its last a known first or last name; single words never are (a first
name alone is as often a word, a place or a brand), and nor is a pair
whose first word begins a place ("San", "Avenida") or a common phrase.
"""

from __future__ import annotations

import gc
import gzip
import os
import pickle
import re
import threading
from collections.abc import Iterator
from pathlib import Path

# A name ranks among the RANK most common of at least one country.
FIRST_RANK = 1500
LAST_RANK = 3000
_VERSION = 1

_LOCK = threading.Lock()
_LISTS: tuple[frozenset[str], frozenset[str]] | None = None


def cache_dir() -> Path:
    base = os.environ.get("PROTEGE_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "protege"
    )
    return Path(base)


def _extract(path: Path, rank: int) -> list[str]:
    # A million small dicts: the cyclic GC would rescan them all as they arrive.
    gc.disable()
    try:
        with gzip.open(path, "rb") as fh:
            table = pickle.load(fh)  # names-dataset's own file, shipped in its wheel
    finally:
        gc.enable()
    out = []
    for name, info in table.items():
        ranks = info.get("rank") or {}
        if any(r is not None and r <= rank for r in ranks.values()):
            out.append(name)
    return out


def _build(cache: Path) -> tuple[frozenset[str], frozenset[str]]:
    import names_dataset

    root = Path(names_dataset.__file__).parent / "v3"
    first = _extract(root / "first_names.pkl.gz", FIRST_RANK)
    last = _extract(root / "last_names.pkl.gz", LAST_RANK)
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".tmp")
    with gzip.open(tmp, "wt", encoding="utf-8") as fh:
        fh.write("\n".join(first) + "\n\x00\n" + "\n".join(last) + "\n")
    tmp.replace(cache)
    return frozenset(first), frozenset(last)


def lists() -> tuple[frozenset[str], frozenset[str]]:
    """(first names, last names), as names-dataset spells them (title case);
    both empty when names-dataset is not installed."""
    global _LISTS
    with _LOCK:
        if _LISTS is not None:
            return _LISTS
        try:
            from importlib.metadata import version

            import names_dataset  # noqa: F401

            tag = version("names-dataset")
        except ImportError:
            _LISTS = (frozenset(), frozenset())
            return _LISTS
        cache = cache_dir() / f"names-{tag}-{FIRST_RANK}-{LAST_RANK}-v{_VERSION}.txt.gz"
        try:
            with gzip.open(cache, "rt", encoding="utf-8") as fh:
                first, _, last = fh.read().partition("\n\x00\n")
            _LISTS = (frozenset(first.split("\n")) - {""}, frozenset(last.split("\n")) - {""})
        except (OSError, EOFError):
            _LISTS = _build(cache)
        return _LISTS


# -- Latin and other cased scripts --------------------------------------------
# Capitalised words that start sentences and instructions far more often than names.
COMMON_CAPITALISED = frozenset(
    """find calculate compute get set give show list tell write create make book search look check
    convert translate summarize summarise explain describe return use answer question given here
    please help retrieve fetch send add remove delete update call run what which who whom whose
    when where why how is are was were do does did can could would should will shall may might
    must have has had the a an this that these those there their they then than and or but if
    for from with without into onto about above after before between during hello hi hey dear
    thanks thank yes no not note you your we our i my me it its he she his her him them us
    let let's today tomorrow yesterday monday tuesday wednesday thursday friday saturday sunday
    january february march april june july august september october november december user
    assistant system tool function json api id true false none null output input example step
    task query result results error warning info debug okay ok sure also each every all any some
    one two three four five six seven eight nine ten first second third next last new old
    good great best important required optional default value values data file files name
    number total price date time year years day days week month hour hours minutes order
    email mail message subject reply welcome customer client patient guest passenger member
    caller contact attn attention""".split()
)
# Capital and small letters of the cased scripts (Latin with its diacritics,
# Greek, Cyrillic, Armenian, ...); detectors.py builds its name words from them too.
UPPER_LETTERS = "".join(c for c in map(chr, range(0x41, 0x2000)) if c.isupper() and c.isalpha())
LOWER_LETTERS = "".join(c for c in map(chr, range(0x61, 0x2000)) if c.islower() and c.isalpha())
_UP, _LOW = re.escape(UPPER_LETTERS), re.escape(LOWER_LETTERS)
_WORD = f"[{_UP}][{_LOW}]+(?:[-'’][{_UP}]?[{_LOW}]+)?"
_PARTICLE = r"(?:van|von|de|da|das|do|dos|del|della|der|den|di|du|le|la|ter|ten|bin|binti|ibn|al|el|y|e)"
_RUN = re.compile(rf"(?<![\w@./-]){_WORD}(?:\s(?:{_PARTICLE}\s)*{_WORD}){{1,4}}(?![\w@/-]|\.\w)")
_TOKEN = re.compile(rf"{_WORD}|{_PARTICLE}")
# First words that begin places, greetings and phrases more often than names.
_NOT_FIRST = frozenset(
    """san santa santo são sao saint st sainte mount monte lake fort port porto puerto new north south east west
    upper lower great little old casa villa hotel café cafe bar club avenida avenue rua rue calle via viale piazza plaza praça place plac ulica
    good happy merry dear hello guten bonjour buenos buenas bom boa dzień feliz joyeux frohe
    mister miss madam lord lady king queen prince princess president general captain doctor""".split()
)
# Last words that make a pair a place, an organisation or a thing.
_NOT_LAST = frozenset(
    """street road avenue lane drive park square station airport river lake bay beach island city town hall
    house hotel bank group company university college school hospital church centre center tower bridge
    morgen tag abend nacht dia noite tarde day night morning evening""".split()
)


# Scripts without capitals (Arabic, Hebrew, Devanagari, Bengali, Tamil, Thai,
# Georgian): a pair of words whose first is a listed first name and whose
# second is a listed name too. names-dataset has them in their own script.
_CASELESS_WORD = "[\u0590-\u05ff\u0600-\u06ff\u0900-\u097f\u0980-\u09ff\u0b80-\u0bff\u0e00-\u0e7f\u10d0-\u10ff]+"
_CASELESS_PAIR = re.compile(rf"(?<![\w\u0900-\u0bff\u0e00-\u0e7f])({_CASELESS_WORD}) ({_CASELESS_WORD})(?![\w\u0900-\u0bff\u0e00-\u0e7f])")


def caseless_names(text: str) -> Iterator[tuple[int, int]]:
    """First name + last name in a script without capitals."""
    first, last = lists()
    if not first:
        return
    for m in _CASELESS_PAIR.finditer(text):
        a, b = m.group(1), m.group(2)
        if a in first and (b in last or b in first):
            yield m.start(), m.end()


def _is_first(word: str, first: frozenset[str]) -> bool:
    return word in first and word.lower() not in _NOT_FIRST


def known_name(words: list[str]) -> bool | None:
    """Whether any of ``words`` is a listed first or last name; None when
    there are no lists (names-dataset not installed)."""
    first, last = lists()
    if not first:
        return None
    return any(w in first or w in last for w in (w.strip(".,:;'’").title() for w in words))


def not_a_name(words: list[str]) -> bool:
    """A phrase that begins a place or a greeting, or ends as a place or thing:
    "Avenida da Liberdade", "Guten Morgen", "Porto"."""
    head = words[0].lower().strip(".,:;")
    tail = words[-1].lower().strip(".,:;'’")
    return head in _NOT_FIRST or (len(words) > 1 and tail in _NOT_LAST)


def latin_names(text: str, common: frozenset[str] = COMMON_CAPITALISED) -> Iterator[tuple[int, int]]:
    """Pairs (or longer runs) of capitalised words that read as first name +
    last name. ``common`` holds lowercased words that are never part of a
    name here (sentence openers, role nouns)."""
    first, last = lists()
    if not first:
        return
    for m in _RUN.finditer(text):
        toks = [(t.start(), t.end(), t.group()) for t in _TOKEN.finditer(m.group())]
        i = 0
        while i < len(toks):
            a, _, w = toks[i]
            if not w[0].isupper() or w.lower() in common or not _is_first(w, first):
                i += 1
                continue
            end_j = None
            for j in range(i + 1, min(len(toks), i + 5)):
                v = toks[j][2]
                if not v[0].isupper():
                    continue
                if v.lower() in _NOT_LAST or v.lower() in common:
                    break
                if v in last or v in first:
                    end_j = j
            # "Hardy Weinberg Principle": a pair inside a longer proper noun is not a name.
            nxt = toks[end_j + 1][2] if end_j is not None and end_j + 1 < len(toks) else ""
            if end_j is None or nxt[:1].isupper() and nxt not in last and nxt not in first:
                i += 1
                continue
            yield m.start() + a, m.start() + toks[end_j][1]
            i = end_j + 1


# -- Chinese, Japanese, Korean ------------------------------------------------
# The most common family names: Chinese (the first ~120 of the Hundred
# Family Surnames by population, with the two-character ones), Japanese (the
# most common ~100), Korean (the ~40 that cover nine in ten people).
_ZH_SURNAMES = set(
    "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏魏吕丁任沈姚卢"
    "姜崔钟谭陆汪范金石廖贾夏韦付方白邹孟熊秦邱江尹薛闫段雷侯龙史陶黎贺顾毛郝龚邵万钱严覃武戴莫孔向汤常温康施"
    "文牛樊葛邢安齐易乔伍庞颜倪庄聂章鲁岳翟殷詹申欧耿关兰焦俞左柳甘祝包宁尚符舒阮柯纪梅童凌毕单季裴霍涂成苗谷"
    "盛曲翁冉骆蓝路游辛靳管柴蒙鲍华喻祁蒲房滕屈饶解牟艾尤阳时穆农司卓古吉缪简车项连芦麦褚娄窦戚岑景党宫费卜冷"
    "晏席卫米柏宗瞿桂全佟应臧闵苟邬边卞姬师和仇栾隋商刁沙荣巫寇桑郎甄丛仲虞敖巩明佘池查麻苑迟邝"
    "張劉陳楊黃趙吳孫馬鄭謝韓馮鄧蕭許葉蘇呂盧鍾譚陸範賈韋鄒龔顏聶魯嚴"
)
_ZH_DOUBLE = ("欧阳", "司马", "上官", "诸葛", "东方", "皇甫", "尉迟", "公孙", "慕容", "长孙", "歐陽", "司馬")
_JA_SURNAMES = (
    "佐藤 鈴木 高橋 田中 伊藤 渡辺 山本 中村 小林 加藤 吉田 山田 佐々木 山口 松本 井上 木村 林 斎藤 清水 山崎 森 池田 橋本 "
    "阿部 石川 山下 中島 石井 小川 前田 岡田 長谷川 藤田 後藤 近藤 村上 遠藤 青木 坂本 斉藤 福田 太田 西村 藤井 金子 岡本 "
    "藤原 中野 三浦 原田 中川 松田 竹内 小野 田村 中山 和田 石田 森田 上田 原 内田 柴田 酒井 宮崎 横山 高木 安藤 宮本 大野 "
    "小島 工藤 谷口 今井 高田 丸山 増田 杉山 村田 大塚 小山 平野 藤本 河野 上野 野口 武田 松井 千葉 岩崎 菅原 木下 久保 "
    "佐野 野村 松尾 市川 菊地 杉本 古川 大西 島田 水野 桜井 高野 渡部 吉川 山内 西田 飯田 菊池 西川 小松 北村 安田 五十嵐"
).split()
_KO_SURNAMES = set("김이박최정강조윤장임한오서신권황안송류전홍고문양손배백허유남심노하곽성차주우구민진나지엄원채천방공현함변염여추도소석선설마길연위표명기반왕금옥육인맹제모탁국어은편용예경봉")

_HAN = "\u4e00-\u9fff\u3400-\u4dbf"
_CJK_RUN = re.compile(rf"(?<![{_HAN}\u3040-\u30ff])[{_HAN}々]{{2,5}}(?![{_HAN}\u3040-\u30ff々])")
_HANGUL_RUN = re.compile(r"(?<![\uac00-\ud7af])[\uac00-\ud7af]{2,4}(?![\uac00-\ud7af])")
# Words before a quoted phrase that is about language, not a person.
_ABOUT_WORDS = re.compile(r"(?i)(?:translat\w*|means?|meaning|say|word|phrase|character|kanji|hanzi|hangul|"
                          r"pronounce\w*|write|written|spell\w*)\W{0,12}$")


_ABOUT_AFTER = re.compile(r"(?i)\W{0,3}(?:means?|stands? for|is written|in (?:chinese|japanese|korean|english))\b")


def _island(text: str, start: int, end: int) -> bool:
    """Whether the run is a name-sized island in text of another script (in
    Chinese or Japanese prose every run would start with some surname), and
    not a word being asked about ("what 谢谢 means")."""
    letters = sum(c.isalpha() for c in text)
    return (
        (end - start) * 3 <= letters
        and not _ABOUT_WORDS.search(text, max(0, start - 30), start)
        and not _ABOUT_AFTER.match(text, end)
    )


def cjk_names(text: str) -> Iterator[tuple[int, int]]:
    """Chinese, Japanese and Korean names: a run of characters that starts
    with a common family name and stands alone in text of another script."""
    for m in _CJK_RUN.finditer(text):
        run = m.group()
        zh = (run[0] in _ZH_SURNAMES and len(run) <= 3) or (run[:2] in _ZH_DOUBLE and len(run) <= 4)
        ja = any(run.startswith(s) and 1 <= len(run) - len(s) <= 3 for s in _JA_SURNAMES)
        if (zh or ja) and _island(text, m.start(), m.end()):
            yield m.start(), m.end()
    for m in _HANGUL_RUN.finditer(text):
        run = m.group()
        if run[0] in _KO_SURNAMES and len(run) <= 4 and _island(text, m.start(), m.end()):
            yield m.start(), m.end()
