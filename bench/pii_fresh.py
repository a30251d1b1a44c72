"""Builds bench/data/pii_fresh.jsonl: the fresh held-out side of bench/pii.py.

The earlier held-out set (bench/pii_heldout.py) was looked at once its
misses were known, so it is evidence no longer. This one is built from
sources no detector uses: Faker's per-locale data (names, addresses, phone
numbers, e-mails and its generators of national ids with valid check
digits), where the detectors use names-dataset's lists, hand lists of CJK
family names and python-stdnum; secrets are random values in the formats
the providers issue; the sentences are new templates in code, JSON, logs,
chat and e-mail, none taken from bench/data/pii_cases.jsonl or the earlier
set. Strings that must stay: Faker's town names of many countries, product
codes, hashes, amounts and dates, plus hand-written phrases, places and
identifiers.

Its construction is committed before any detector runs on it; never tune
on it. Rebuild (built with Faker 40.63; deterministic but for the Italian
town of one CSV row, which Faker draws from a set and so depends on
PYTHONHASHSEED: the committed file is the one measured):

    .venv/bin/python bench/pii_fresh.py
"""

from __future__ import annotations

import base64
import json
import random
import string
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
from pii_heldout import _case, write_cases  # noqa: E402  (_case fills a template's slots, spans at each value)

OUT = ROOT / "bench" / "data" / "pii_fresh.jsonl"
SEED = 4417

# Locales whose Faker names are in their own script or spelling.
NAME_LOCALES = [
    "pl_PL", "pt_BR", "pt_PT", "fr_FR", "de_DE", "nl_NL", "it_IT", "es_ES", "es_MX", "es_AR", "tr_TR", "sv_SE",
    "fi_FI", "cs_CZ", "hu_HU", "ro_RO", "hr_HR", "da_DK", "no_NO", "en_IN", "en_NG", "yo_NG", "en_KE", "id_ID",
    "vi_VN", "fil_PH", "zh_CN", "zh_TW", "ja_JP", "ko_KR", "ru_RU", "uk_UA", "bg_BG", "el_GR", "ar_SA", "ar_EG",
    "he_IL", "hi_IN", "th_TH", "fa_IR", "ka_GE", "hy_AM", "bn_BD", "ta_IN", "en_US", "en_GB", "ga_IE", "zu_ZA",
]  # fmt: skip
NAME_TEMPLATES = [
    "Could you check whether {} has paid the deposit?",
    "Notes from the call: {} prefers e-mail over phone.",
    "assigned_to: {}\nstatus: waiting on customer",
    "Escalated by {} after two failed logins.",
    '{{"ticket": 99120, "requester": "{}", "priority": "high"}}',
    "audit actor=\"{}\" action=export rows=120",
    "I spoke with {} and they agreed to the new date.",
    "The form was filled in by {} on behalf of the family.",
    "Thanks again, {} — the package came on time!",
    "Reminder: {} is off until the 14th; route their tickets elsewhere.",
]

PHONE_LOCALES = [
    "pl_PL", "pt_BR", "fr_FR", "de_DE", "nl_NL", "it_IT", "es_ES", "sv_SE", "fi_FI", "cs_CZ", "ro_RO", "hr_HR",
    "da_DK", "en_GB", "en_US", "en_IN", "en_AU", "ja_JP", "ko_KR", "zh_CN", "ru_RU", "tr_TR", "he_IL", "th_TH",
    "es_MX", "es_CL", "en_NG", "en_KE", "id_ID", "vi_VN",
]  # fmt: skip
PHONE_TEMPLATES = [
    "Best number to reach me: {}",
    "Customer left {} as the callback number.",
    '{{"shipping": {{"phone": "{}", "notes": "ring twice"}}}}',
    "ERROR twilio send failed to={} code=30003",
    "If the courier cannot find the door, call {}.",
]

ADDRESS_LOCALES = ["pl_PL", "fr_FR", "nl_NL", "de_DE", "pt_PT", "pt_BR", "es_ES", "it_IT", "en_GB", "en_US",
                   "sv_SE", "cs_CZ", "da_DK", "no_NO", "fi_FI", "hr_HR", "de_AT", "nl_BE"]
ADDRESS_TEMPLATES = [
    "Please send the replacement to {}.",
    "shipping_address: {}",
    "Our office has moved to {} (second floor).",
]

# (locale, Faker method, how people name the id before it)
IDS = [
    ("pl_PL", "pesel", "PESEL"), ("pt_BR", "cpf", "CPF"), ("fr_FR", "ssn", "numéro de sécurité sociale"),
    ("nl_NL", "ssn", "BSN"), ("es_ES", "nif", "DNI"), ("it_IT", "ssn", "codice fiscale"),
    ("sv_SE", "ssn", "personnummer"), ("fi_FI", "ssn", "henkilötunnus"), ("no_NO", "ssn", "fødselsnummer"),
    ("tr_TR", "ssn", "TC Kimlik No"), ("en_IN", "aadhaar_id", "Aadhaar"), ("zh_CN", "ssn", "身份证号"),
    ("ro_RO", "ssn", "CNP"), ("hr_HR", "ssn", "OIB"), ("es_MX", "curp", "CURP"), ("es_CL", "rut", "RUT"),
    ("en_US", "ssn", "SSN"), ("cs_CZ", "birth_number", "rodné číslo"), ("de_CH", "ssn", "AHV-Nummer"),
    ("et_EE", "ssn", "isikukood"),
]  # fmt: skip
ID_TEMPLATES = [
    "For the contract I need your {} — mine is {}.",
    "KYC: {} {} matches the document scan.",
    "{}: {}",
]
# Ids written with no word naming them, as a form or a CSV row would.
BARE_IDS = [("pl_PL", "pesel"), ("pt_BR", "cpf"), ("nl_NL", "ssn"), ("it_IT", "ssn")]
BARE_TEMPLATE = "{name};{id};{city}"

EMAIL_LOCALES = ["pl_PL", "de_DE", "fr_FR", "pt_BR", "ja_JP", "en_IN", "tr_TR", "nl_NL"]
EMAIL_TEMPLATES = ["cc {} on the reply", "From: {}\nSubject: invoice question"]

KEEP_PHRASES = [
    "Translate 'Bonne nuit et à demain' into Finnish.",
    "What does 'Hyvää huomenta' mean?",
    "Write 'Feliz cumpleaños' on the cake.",
    "How do you say 'Goedemiddag' in English?",
    "Reply with 'Tak for mad' if the user writes in Danish.",
    "Is 'Dobrý den' formal or informal in Czech?",
    "Flights from Saint Petersburg to San José next Friday.",
    "Book a hotel in Santa Monica close to the pier.",
    "Distance from Victoria Falls to Port Elizabeth by road.",
    "Museums open late in Mexico City and Buenos Aires.",
    "Hiking trails around Lake Como and Monte Rosa.",
    "Call list_customers(limit=50, region='EMEA') and sort by created_at.",
    "The tool get_order_status returned {'state': 'SHIPPED', 'eta_days': 2}.",
    "Use send_sms only for verified numbers; never for marketing.",
    "class InvoiceParser(BaseParser): def parse_line(self, raw: str) -> dict: ...",
    "SELECT customer_id, SUM(total) FROM orders GROUP BY customer_id LIMIT 20;",
    "export RETRY_LIMIT=5 QUEUE_NAME=payments-eu",
    "Pod checkout-7c9f6b8d5-x2kqp restarted 4 times in 10 minutes.",
    "Tracking number 9400 1118 9922 3847 5601 23 is in transit.",
    "Parcel CX 2041 7789 3DE waiting at the pick-up point.",
    "PESEL 12345678901 is not valid, please check it.",
    "The CPF field must have 11 digits; 111.111.111-11 is rejected.",
    "Room 4.12, building C, floor 4.",
    "The meeting moved from 14:30 to 15:15 CET.",
    "Average latency 183 ms, p95 412 ms, p99 1,030 ms over 24 h.",
    "Set batch_size=32, lr=2e-5, warmup 500 steps, 3 epochs.",
    "The Amazon Echo and the Google Nest both support the skill.",
    "Ask Alexa to play the morning playlist.",
    "Release 26.04.1 ships the new Polish and Dutch locales.",
    "Order of 12 × Kraft Paper A4, 80 g/m², total 46,20 €.",
]


def _faker(locale: str, seed: int) -> Any:
    from faker import Faker

    f = Faker(locale)
    f.seed_instance(seed)
    return f


def _rand(rng: random.Random, alphabet: str, n: int) -> str:
    return "".join(rng.choice(alphabet) for _ in range(n))


def secrets(rng: random.Random) -> list[tuple[str, str, str]]:
    """(text, value, kind): fresh random values in the providers' formats."""
    an = string.ascii_letters + string.digits
    b64 = lambda raw: base64.urlsafe_b64encode(raw).rstrip(b"=").decode()  # noqa: E731
    jwt = ".".join([b64(b'{"alg":"RS256","typ":"JWT"}'),
                    b64(json.dumps({"sub": rng.randint(10**5, 10**6), "scope": "orders:read"}).encode()),
                    b64(bytes(rng.getrandbits(8) for _ in range(32)))])
    pw1 = _rand(rng, an, 6) + "!" + _rand(rng, an, 5)
    pw2 = _rand(rng, string.ascii_lowercase, 5) + "-" + _rand(rng, an, 7)
    pem = "\n".join(_rand(rng, an + "+/", 64) for _ in range(4))
    vals = [
        ("AKIA" + _rand(rng, string.ascii_uppercase + string.digits, 16), "aws_access_key_id = {}", "API_KEY"),
        ("ghp_" + _rand(rng, an, 36), "git clone https://x-access-token:{}@github.com/acme/app.git", "API_KEY"),
        ("sk_live_" + _rand(rng, an, 24), "stripe.api_key = '{}'", "API_KEY"),
        ("xoxb-" + "-".join(_rand(rng, string.digits, 12) for _ in range(2)) + "-" + _rand(rng, an, 24),
         'SLACK_BOT_TOKEN="{}"', "API_KEY"),
        ("sk-proj-" + _rand(rng, an + "_-", 48), "OPENAI_API_KEY={}", "API_KEY"),
        ("AIza" + _rand(rng, an + "_-", 35), '{{"maps": {{"key": "{}"}}}}', "API_KEY"),
        (jwt, "WARN refresh failed token={} status=401", "JWT"),
        (pw1, "mysql://reporting:{}@10.1.4.7:3306/sales", "PASSWORD"),
        (pw2, "db:\n  user: app\n  password: {}\n  host: db.internal", "PASSWORD"),
        ("hf_" + _rand(rng, an, 34), "huggingface-cli login --token {}", "API_KEY"),
        ("glpat-" + _rand(rng, an + "_-", 20), "CI_JOB_TOKEN: {}", "API_KEY"),
        ("-----BEGIN RSA PRIVATE KEY-----\n" + pem + "\n-----END RSA PRIVATE KEY-----",
         "deploy key:\n{}\n", "PRIVATE_KEY"),
        (_rand(rng, an, 32), "The user pasted their password: {} (please rotate)", "PASSWORD"),
        ("SG." + _rand(rng, an + "_-", 22) + "." + _rand(rng, an + "_-", 43), "sendgrid: {}", "API_KEY"),
    ]
    return [(tpl.replace("{}", v, 1).replace("{{", "{").replace("}}", "}"), v, kind) for v, tpl, kind in vals]


def build() -> list[dict[str, Any]]:
    rng = random.Random(SEED)
    cases: list[dict[str, Any]] = []

    def add(group: str, template: str, values: list[tuple[str, str]]) -> None:
        cases.append(_case(len(cases), group, template, values, prefix="fresh"))

    for k, loc in enumerate(NAME_LOCALES):
        f = _faker(loc, SEED + k)
        name = f"{f.first_name()} {f.last_name()}"
        if loc in ("zh_CN", "zh_TW", "ja_JP", "ko_KR"):
            name = f.last_name() + f.first_name()  # family name first, no space
        add("fresh positives: names", NAME_TEMPLATES[k % len(NAME_TEMPLATES)], [(name, "PERSON")])
    for k, loc in enumerate(PHONE_LOCALES):
        f = _faker(loc, SEED + 100 + k)
        add("fresh positives: phones", PHONE_TEMPLATES[k % len(PHONE_TEMPLATES)], [(f.phone_number(), "PHONE")])
    for k, loc in enumerate(ADDRESS_LOCALES):
        f = _faker(loc, SEED + 200 + k)
        addr = f.address().replace("\n", ", ")
        add("fresh positives: addresses", ADDRESS_TEMPLATES[k % len(ADDRESS_TEMPLATES)], [(addr, "ADDRESS")])
    for k, (loc, method, label) in enumerate(IDS):
        f = _faker(loc, SEED + 300 + k)
        value = str(getattr(f, method)())
        template = ID_TEMPLATES[k % len(ID_TEMPLATES)].replace("{}", label, 1)
        add("fresh positives: national ids", template, [(value, "NATIONAL_ID")])
    for k, (loc, method) in enumerate(BARE_IDS):
        f = _faker(loc, SEED + 400 + k)
        name, value, city = f"{f.first_name()} {f.last_name()}", str(getattr(f, method)()), f.city()
        add("fresh positives: national ids without a cue", "{};{};" + city.replace("{", "(").replace("}", ")"),
            [(name, "PERSON"), (value, "NATIONAL_ID")])
    for text, value, kind in secrets(rng):
        start = text.index(value)
        cases.append({"id": f"fresh-{len(cases):03d}", "group": "fresh positives: secrets", "text": text,
                      "spans": [{"start": start, "end": start + len(value), "type": kind, "value": value}]})
    for k, loc in enumerate(EMAIL_LOCALES):
        f = _faker(loc, SEED + 500 + k)
        add("fresh positives: emails", EMAIL_TEMPLATES[k % 2], [(f.email(), "EMAIL")])
    for k, loc in enumerate(["pl_PL", "pt_BR", "de_DE", "ja_JP", "tr_TR", "fr_FR"]):
        f = _faker(loc, SEED + 600 + k)
        name = f.last_name() + f.first_name() if loc == "ja_JP" else f"{f.first_name()} {f.last_name()}"
        add("fresh positives: mixed", "New lead: {}, {}, tel. {}.",
            [(name, "PERSON"), (f.email(), "EMAIL"), (f.phone_number(), "PHONE")])
    # Must stay: towns of many countries in requests, Faker's codes, then hand-written strings.
    for k, loc in enumerate(["pl_PL", "pt_PT", "fr_FR", "de_DE", "nl_NL", "it_IT", "es_ES", "cs_CZ", "sv_SE", "tr_TR"]):
        f = _faker(loc, SEED + 700 + k)
        add("fresh negatives: must stay", f"Weather forecast for {f.city()} and {f.city()} this weekend.", [])
    f = _faker("en_US", SEED + 800)
    for template in [
        "EAN {} is out of stock.", "ISBN {} was added to the reading list.", "Commit {} fixed the flaky test.",
        "Request id {} took 2.3 s.", "Invoice total {} EUR due on {}.",
    ]:
        fills = {
            "EAN {} is out of stock.": [f.ean13()],
            "ISBN {} was added to the reading list.": [f.isbn13()],
            "Commit {} fixed the flaky test.": [f.sha1()],
            "Request id {} took 2.3 s.": [f.uuid4()],
            "Invoice total {} EUR due on {}.": [f"{f.pyint(100, 9999)}.{f.pyint(10, 99)}", f.date()],
        }[template]
        text = template
        for v in fills:
            text = text.replace("{}", str(v), 1)
        add("fresh negatives: must stay", text, [])
    for text in KEEP_PHRASES:
        add("fresh negatives: must stay", text.replace("{", "{{").replace("}", "}}"), [])
    return cases


def main() -> None:
    cases = build()
    seen: set[str] = set()
    for other in ("pii_cases.jsonl", "pii_heldout.jsonl"):
        for line in (ROOT / "bench" / "data" / other).read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                seen.update(s["value"] for s in row["spans"])
                seen.add(row["text"])
    clash = [c["id"] for c in cases if c["text"] in seen or any(s["value"] in seen for s in c["spans"])]
    if clash:
        raise SystemExit(f"values shared with the developed or earlier held-out set: {clash}")
    write_cases(OUT, cases)


if __name__ == "__main__":
    main()
