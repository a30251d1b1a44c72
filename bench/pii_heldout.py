"""Builds bench/data/pii_heldout.jsonl: the earlier held-out side of bench/pii.py.

Its misses were read and worked on (names in other scripts, national ids,
European addresses, places read as people), so it is no longer evidence;
bench/pii.py reports it as "earlier held-out" beside the fresh set that
bench/pii_fresh.py builds.

Written from sources the detectors were never developed on: personal names
from many countries and scripts, phone numbers of many regions in the formats
their own numbering plans use (libphonenumber's example numbers, formatted
national, international and E.164), addresses and national ids outside the
US, secrets as they sit in code, JSON, config files and logs, and strings that
must stay (identifiers, amounts, dates, versions, hashes, places, tool names).
Each string is a template filled with values, so the expected spans are exact.

Never tune a detector on this set: tune on bench/data/pii_cases.jsonl and
report this one beside it. Rebuild (deterministic) with

    .venv/bin/python bench/pii_heldout.py
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "data" / "pii_heldout.jsonl"

NAMES = [
    # Latin script, many countries
    "Małgorzata Wiśniewska", "Grzegorz Brzęczyszczykiewicz", "João Gonçalves", "Maria da Conceição Ferreira",
    "Takeshi Yamamoto", "Yuki Nakamura", "Nguyễn Văn Minh", "Trần Thị Lan", "Oluwaseun Adeyemi",
    "Chukwuemeka Okonkwo", "Aigerim Nurlanovna", "Siddharth Venkataraman", "Ananya Krishnamurthy",
    "Mehmet Yılmaz", "Ayşe Demir", "Søren Kierkegaard-Holm", "Björk Guðmundsdóttir", "Zsófia Horváth",
    "Dragoș Popescu", "Fionnuala Ní Bhriain", "Kwame Mensah", "Thandiwe Ndlovu", "Itzel Xochitl Ramírez",
    "Wanjiru Kamau", "Kai Müller-Lüdenscheidt", "Raúl Jiménez Ortega", "Liesbeth van der Berg",
    "Ahmad Fauzi bin Abdullah", "Putri Wulandari", "Tevita Fifita",
    # Other scripts
    "山田太郎", "王小明", "김민준", "Иван Петров", "Ольга Смирнова", "Γιώργος Παπαδόπουλος",
    "محمد العلي", "דוד כהן", "अमित शर्मा", "สมชาย ใจดี",
]
NAME_TEMPLATES = [
    "Please ship the replacement to {} before Monday.",
    "The account holder is {}, she called yesterday.",
    "Book a table for two under the name {}.",
    "Reply to {} with the signed contract attached.",
    "Ticket opened by {}: the app crashes when I upload a photo.",
    "{} asked whether the refund has gone through.",
    '{{"customer": {{"full_name": "{}", "tier": "gold"}}}}',
    "2026-03-02T10:14:07Z INFO checkout user_name={} cart=3 items",
]

PHONE_REGIONS = ["CN", "IN", "BR", "PL", "PT", "JP", "DE", "FR", "GB", "NG", "KE", "ZA", "MX", "AR", "TR",
                 "RU", "KR", "VN", "ID", "PH", "EG", "SA", "AE", "AU", "NL", "ES", "IT", "SE", "CH", "IL"]
PHONE_TEMPLATES = [
    "You can reach me on {} after six.",
    "Mobile: {}",
    "my number is {} if the courier gets lost",
    '{{"contact": {{"phone": "{}"}}}}',
    "WARN sms gateway retry to={} attempt=2",
]

ADDRESSES = [
    "ul. Marszałkowska 84/92, 00-514 Warszawa",
    "Rua Augusta 274, 1100-053 Lisboa",
    "Calle de Alcalá 48, 28014 Madrid",
    "Hauptstraße 5, 10827 Berlin",
    "12 Rue de Rivoli, 75004 Paris",
    "Via Roma 21, 00184 Roma RM",
    "Flat 3, 27 Pembroke Road, Dublin 4",
    "Keizersgracht 123, 1015 CJ Amsterdam",
]
ADDRESS_TEMPLATES = ["Deliver to {} please.", "Billing address: {}", "I moved, the new address is {}."]

IDS = [
    ("CPF 123.456.789-09", "123.456.789-09"),
    ("PESEL 44051401359", "44051401359"),
    ("DNI 12345678Z", "12345678Z"),
    ("passport number X12345678", "X12345678"),
    ("NIR 1 84 12 76 451 089 46", "1 84 12 76 451 089 46"),
    ("Steuer-ID 12 345 678 901", "12 345 678 901"),
]
ID_TEMPLATES = ["For the visa form, my {} is on file.", "KYC check failed for {}."]

SECRETS = [
    'AWS_SECRET_ACCESS_KEY = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"',
    'client = OpenAI(api_key="sk-proj-4f9a8B2c7D1e6F0a3b5C8d9E2f7A1b4C")',
    '{"stripe_key": "sk_live_51HxQ2bC9dE8fG7hJ6kL5mN4pQ3rS2tU1"}',
    "GITHUB_TOKEN=ghp_16C7e42F292c6912E7710c838347Ae178B4a",
    "curl -H 'Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiI0MiJ9.dBjftJeZ4CVPmB92K27uhbUJU1p1r_wW1gFWFOEjXk' https://api.example.com",
    "DATABASE_URL=postgres://admin:Tr0ub4dor-and-3@db.internal:5432/app",
    "2026-01-12 08:00:01 DEBUG login ok password=CorrectHorse9Battery user=ops",
    "google_maps_key: AIzaSyD-9tSrke72PouQMnMX-a7eZSW0jkFMBWY",
    "slack webhook https://hooks.slack.com/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX",
    "export TWILIO_AUTH_TOKEN=9f8e7d6c5b4a39281706f5e4d3c2b1a0",
]
SECRET_VALUES = [
    "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "sk-proj-4f9a8B2c7D1e6F0a3b5C8d9E2f7A1b4C",
    "sk_live_51HxQ2bC9dE8fG7hJ6kL5mN4pQ3rS2tU1", "ghp_16C7e42F292c6912E7710c838347Ae178B4a",
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiI0MiJ9.dBjftJeZ4CVPmB92K27uhbUJU1p1r_wW1gFWFOEjXk", "Tr0ub4dor-and-3",
    "CorrectHorse9Battery", "AIzaSyD-9tSrke72PouQMnMX-a7eZSW0jkFMBWY",
    "https://hooks.slack.com/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX",
    "9f8e7d6c5b4a39281706f5e4d3c2b1a0",
]
SECRET_KINDS = ["SECRET", "API_KEY", "API_KEY", "API_KEY", "JWT", "PASSWORD", "PASSWORD", "API_KEY", "API_KEY",
                "SECRET"]

KEEP = [
    "Call get_user_by_id with user_id 48213 and include_inactive false.",
    "Order ORD-2026-004512 shipped on 2026-02-14 for $1,249.99.",
    "Upgrade torch from 2.13.0 to 2.14.1 and rerun the suite.",
    "The commit 9fceb02d0ae598e95dc970b74767f19372d61af8 broke the build.",
    "Set max_tokens to 2048 and temperature to 0.2 for the summariser.",
    "Weather in São Paulo, Kraków and Osaka for the next 3 days, in celsius.",
    "Convert 1 500 000 JPY to EUR at today's rate.",
    "ISBN 978-3-16-148410-0 is out of stock at the Porto store.",
    "Coordinates 52.2297, 21.0122 are the meeting point.",
    "Retry the job 3 times with a 250 ms back-off, then page on-call.",
    "Use the tool search_flights(origin='WAW', destination='LIS', date='2026-05-01').",
    "The SKU 4006381333931 maps to product 'Stabilo pen, blue'.",
    "Container 7f3c2a1b9d8e started on port 8080 with 4 workers.",
    "Read rows 1000 to 2500 from sales_2025_q4.csv and sum the revenue column.",
    "Trace id 0af7651916cd43dd8448eb211c80319c took 1.42 s end to end.",
    "Latitude 35.6895 longitude 139.6917, elevation 40 m.",
    "Invoice total 12 345,67 zł, VAT 23%, due in 14 days.",
    "The Amazon and the Nile are the longest rivers; compare their basins.",
    "Find hotels near Avenida da Liberdade under 180 EUR a night.",
    "Model gemma-3-270m scored 0.54 on 39 test calls.",
    "Temperature sensor 3 reads 21.5 C at 14:05.",
    "Translate 'Guten Morgen, wie geht es Ihnen?' into Japanese.",
    "Ping 10 hosts in parallel and report the p99 latency.",
    "def parse_phone(value: str) -> str: return value.strip()",
    '{"page": 2, "per_page": 50, "sort": "created_at", "order": "desc"}',
    "Track parcel 1Z 999 AA1 01 2345 6784 through the UPS tool.",
    "Build number 20260301.4 passed 1,204 tests in 318 s.",
    "The function calculate_triangle_area takes base 10 and height 5.",
    "Ask Siri to set a timer for 25 minutes.",
    "Reserve meeting room B-204 from 09:30 to 11:00 on Thursday.",
]


def _case(i: int, group: str, template: str, values: list[tuple[str, str]], prefix: str = "held") -> dict:
    """Fill ``{}`` slots in order; spans point at each value."""
    text, spans = "", []
    parts = re.split(r"(?<!\{)\{\}(?!\})", template)
    for j, part in enumerate(parts):
        text += part.replace("{{", "{").replace("}}", "}")
        if j < len(values):
            value, kind = values[j]
            spans.append({"start": len(text), "end": len(text) + len(value), "type": kind, "value": value})
            text += value
    return {"id": f"{prefix}-{i:03d}", "group": group, "text": text, "spans": spans}


def phones() -> list[str]:
    import phonenumbers as P

    out = []
    formats = [P.PhoneNumberFormat.INTERNATIONAL, P.PhoneNumberFormat.NATIONAL, P.PhoneNumberFormat.E164]
    for k, region in enumerate(PHONE_REGIONS):
        kind = P.PhoneNumberType.MOBILE if k % 2 == 0 else P.PhoneNumberType.FIXED_LINE
        num = P.example_number_for_type(region, kind) or P.example_number(region)
        out.append(P.format_number(num, formats[k % 3]))
    return out


def build() -> list[dict]:
    rng = random.Random(20261207)
    cases = []
    for k, name in enumerate(NAMES):
        cases.append(_case(len(cases), "held-out positives: names", NAME_TEMPLATES[k % len(NAME_TEMPLATES)],
                           [(name, "PERSON")]))
    for k, phone in enumerate(phones()):
        cases.append(_case(len(cases), "held-out positives: phones", PHONE_TEMPLATES[k % len(PHONE_TEMPLATES)],
                           [(phone, "PHONE")]))
    for k, addr in enumerate(ADDRESSES):
        cases.append(_case(len(cases), "held-out positives: addresses", ADDRESS_TEMPLATES[k % 3],
                           [(addr, "ADDRESS")]))
    for k, (label, value) in enumerate(IDS):
        head = label[: len(label) - len(value)]
        cases.append(_case(len(cases), "held-out positives: national ids",
                           ID_TEMPLATES[k % 2].replace("{}", head + "{}"), [(value, "NATIONAL_ID")]))
    for text, value, kind in zip(SECRETS, SECRET_VALUES, SECRET_KINDS, strict=True):
        start = text.index(value)
        cases.append({"id": f"held-{len(cases):03d}", "group": "held-out positives: secrets in code and logs",
                      "text": text, "spans": [{"start": start, "end": start + len(value), "type": kind,
                                               "value": value}]})
    mixed = [("Hi, this is {} ({}), please call back on {}.", ["PERSON", "EMAIL", "PHONE"])]
    for template, kinds in mixed:
        for _ in range(4):
            name = rng.choice(NAMES[:30])
            email = re.sub(r"[^a-z]", "", name.split()[0].lower().encode("ascii", "ignore").decode()) or "user"
            email += f".{rng.randint(10, 99)}@poczta.example.pl"
            phone = rng.choice(phones())
            cases.append(_case(len(cases), "held-out positives: mixed", template,
                               list(zip([name, email, phone], kinds, strict=True))))
    for text in KEEP:
        cases.append({"id": f"held-{len(cases):03d}", "group": "held-out negatives: must stay", "text": text,
                      "spans": []})
    return cases


def write_cases(out: Path, cases: list[dict]) -> None:
    """One JSON line per case, and what was written."""
    out.write_text("".join(json.dumps(c, ensure_ascii=False) + "\n" for c in cases))
    n = sum(len(c["spans"]) for c in cases)
    print(f"wrote {out.relative_to(ROOT)}: {len(cases)} strings, {n} entities, "
          f"{sum(1 for c in cases if not c['spans'])} that must stay")


def main() -> None:
    write_cases(OUT, build())


if __name__ == "__main__":
    main()
