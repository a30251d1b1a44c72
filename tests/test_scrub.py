from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from protege.capture import build_trace
from protege.cli.main import cli
from protege.curate import Scrubber, redact_trace
from protege.curate.checksums import iban_ok, luhn_ok
from protege.curate.names import needs_ner
from protege.curate.surrogates import surrogate


@pytest.fixture(scope="module")
def scrubber() -> Scrubber:
    return Scrubber()


@pytest.fixture(scope="module")
def patterns() -> Scrubber:
    return Scrubber(ner=False)


def kinds(s: Scrubber, text: str) -> list[tuple[str, str]]:
    return [(sp.kind, text[sp.start : sp.end]) for sp in s.detect(text)]


@pytest.mark.parametrize(
    "text, kind, value",
    [
        ("mail jane.doe@example.com now", "EMAIL", "jane.doe@example.com"),
        ("call (415) 555-0132 today", "PHONE", "(415) 555-0132"),
        ("ring +44 20 7946 0958", "PHONE", "+44 20 7946 0958"),
        ("card 4111 1111 1111 1111 ok", "CREDIT_CARD", "4111 1111 1111 1111"),
        ("IBAN DE89 3704 0044 0532 0130 00.", "IBAN", "DE89 3704 0044 0532 0130 00"),
        ("host 192.168.1.24 down", "IP_ADDRESS", "192.168.1.24"),
        ("v6 2001:db8:85a3::8a2e:370:7334 up", "IP_ADDRESS", "2001:db8:85a3::8a2e:370:7334"),
        ("SSN 536-22-8745", "SSN", "536-22-8745"),
        ("NINO AB123456C", "NATIONAL_ID", "AB123456C"),
        ("key sk-proj-4fGh7Jk2Lm9Np3Qr5St8Uv1Wx6Yz0AbCd", "API_KEY", "sk-proj-4fGh7Jk2Lm9Np3Qr5St8Uv1Wx6Yz0AbCd"),
        ("sk-ant-api03-Zx8Yw7Vu6Ts5Rq4Po3Nm2Lk1Ji0", "API_KEY", "sk-ant-api03-Zx8Yw7Vu6Ts5Rq4Po3Nm2Lk1Ji0"),
        ("id AKIAIOSFODNN7EXAMPLE", "API_KEY", "AKIAIOSFODNN7EXAMPLE"),
        ("aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "SECRET",
         "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
        ("ghp_aB3dE5fG7hI9jK1lM3nO5pQ7rS9tU1vW3xY5", "API_KEY", "ghp_aB3dE5fG7hI9jK1lM3nO5pQ7rS9tU1vW3xY5"),
        ("xoxb-1234567890-0987654321-AbCdEfGhIj", "API_KEY", "xoxb-1234567890-0987654321-AbCdEfGhIj"),
        ("sk_live_51HqLmN2eZvKYlo2C8x9Yz7Wv", "API_KEY", "sk_live_51HqLmN2eZvKYlo2C8x9Yz7Wv"),
        ("jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.SflKxwRJSMeKKF2QT4fw", "JWT",
         "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.SflKxwRJSMeKKF2QT4fw"),
        ("password=hunter2Pass", "PASSWORD", "hunter2Pass"),
        ('{"user": "svc", "password": "S3cure!Pass"}', "PASSWORD", "S3cure!Pass"),
        ("postgres://app:Xy7pQ2mLk9@db.internal:5432/prod", "PASSWORD", "Xy7pQ2mLk9"),
        ("ship to 221B Baker Street, London", "ADDRESS", "221B Baker Street"),
        ("Dr. Aisha Khan will call", "PERSON", "Aisha Khan"),
        # Numbers written the way their own country writes them (libphonenumber).
        ("Call me on 138 0013 8000 when you land", "PHONE", "138 0013 8000"),
        ("Numer telefonu: 601 234 567, dzwoń po 17.", "PHONE", "601 234 567"),
        ("Tokyo desk 03-1234-5678, night shift", "PHONE", "03-1234-5678"),
        ("WhatsApp +55 21 98765-4321 for Rio", "PHONE", "+55 21 98765-4321"),
        # Names in other scripts and with diacritics, after a cue word.
        ("Customer name: 佐藤花子, order pending.", "PERSON", "佐藤花子"),
        ("Passenger Дмитрий Соколов missed the connection.", "PERSON", "Дмитрий Соколов"),
        ("Dr. Małgorzata Wiśniewska will call", "PERSON", "Małgorzata Wiśniewska"),
        # A key format only detect-secrets' plugins know (Mailchimp).
        ("mc_api = 0123456789abcdef0123456789abcdef-us12", "SECRET", "0123456789abcdef0123456789abcdef-us12"),
    ],
)
def test_patterns_find_pii_and_secrets(patterns, text, kind, value):
    assert (kind, value) in kinds(patterns, text)


def test_private_key_block_is_removed_whole(patterns):
    pem = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA7bq98Xk3\nabc=\n-----END RSA PRIVATE KEY-----"
    out = patterns.scrub_text(f"key:\n{pem}\nthanks")
    assert out == "key:\n<PRIVATE_KEY_1>\nthanks"


@pytest.mark.parametrize(
    "text",
    [
        "Find the area of a triangle with a base of 10 units and height of 5 units.",
        "What is the weather like in San Francisco today?",
        "Call get_user_by_id with user_id 42 and read /etc/nginx/nginx.conf",
        "The record id is 550e8400-e29b-41d4-a716-446655440000.",
        "sha256: e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "Order 1234567812345678 is a reference, not a card (Luhn fails).",
        "Reference DE00370400440532013000 fails the IBAN checksum.",
        "SSN-like 000-12-3456 and 666-12-3456 and 912-34-5678 are never issued.",
        "Upgrade to version 10.4.2.1 and Python 3.11.4; meeting at 12:30:45 on 2024-06-01.",
        "Use std::vector<int>; docker run -p 8080:80 nginx:1.25.3",
        "Set max_tokens=256, tokenizer=bert-base-uncased; the password field is required.",
        "Password: ******** (hidden); store it in OPENAI_API_KEY, never in code.",
        "Book a flight from Austin to Orlando on 2024-03-15 for 2 adults.",
        '{"name": "calculate_triangle_area", "arguments": {"base": 10, "height": 5}}',
        "Sum the values 10 20 30 40 50 and report the mean.",
        "order_id=4006381333931 status=shipped; release 20251114.2 is live",
    ],
)
def test_ordinary_requests_and_identifiers_survive(scrubber, text):
    assert scrubber.scrub_text(text) == text


def test_checksums():
    assert luhn_ok("4111111111111111") and not luhn_ok("4111111111111112")
    assert iban_ok("GB82 WEST 1234 5698 7654 32") and not iban_ok("GB83WEST12345698765432")


def test_names_need_ner_and_ner_is_skipped_where_no_name_can_be(scrubber):
    assert scrubber.scrub_text("Please email John Smith about the renewal.") == (
        "Please email <PERSON_1> about the renewal."
    )
    assert not needs_ner("find the area of a triangle with base 10")
    assert not needs_ner("get_user_by_id")
    assert not needs_ner("12345.67")
    assert not needs_ner("What is the total price?")  # capitalised, but a common opener
    assert needs_ner("Ask Priya about it")


def test_same_value_same_placeholder_within_a_record(scrubber):
    text = "Maria Garcia (maria@x.org) wrote; reply to MARIA@X.ORG and tell Maria. Bob Lee too."
    out = scrubber.scrub_text(text)
    assert out == "<PERSON_1> (<EMAIL_1>) wrote; reply to <EMAIL_1> and tell <PERSON_1>. <PERSON_2> too."
    # Numbering restarts per record.
    assert scrubber.scrub_text("mail bob@y.org") == "mail <EMAIL_1>"


def test_surrogates_are_realistic_and_deterministic():
    s = Scrubber(surrogates=True, ner=False)
    text = "card 4111 1111 1111 1111, ssn 536-22-8745, mail a@b.com, ip 10.1.2.3, IBAN DE89370400440532013000"
    out = s.scrub_text(text)
    assert "4111" not in out and "536-22" not in out and "a@b.com" not in out and "10.1.2.3" not in out
    assert "<" not in out
    assert out == Scrubber(surrogates=True, ner=False).scrub_text(text)
    # Fakes keep their kind: still a Luhn-valid card, a valid IBAN, an unissued SSN area.
    assert luhn_ok(surrogate("CREDIT_CARD", "4111111111111111"))
    assert iban_ok(surrogate("IBAN", "DE89370400440532013000"))
    assert surrogate("SSN", "536-22-8745").startswith("9")
    assert surrogate("EMAIL", "a@b.com").endswith("@example.com")
    assert surrogate("PERSON", "John Smith") != surrogate("PERSON", "Jane Smith")


def test_tool_arguments_are_scrubbed_value_by_value_and_stay_json(scrubber):
    args = json.dumps(
        {"to": "jane@example.com", "first_name": "Lucas", "password": "pa55word!", "count": 3,
         "city": "San Francisco", "tags": ["call +1 415 555 0100"], "func": "get_user_by_id"}
    )
    request = {"model": "m", "messages": [{"role": "user", "content": "Email jane@example.com"}]}
    response = {
        "object": "chat.completion",
        "choices": [
            {"index": 0, "finish_reason": "tool_calls",
             "message": {"role": "assistant", "content": None,
                         "tool_calls": [{"id": "c1", "type": "function",
                                         "function": {"name": "send_mail", "arguments": args}}]}}
        ],
    }
    t = build_trace(request, response)
    red = redact_trace(t)
    got = json.loads(red.response["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"])
    assert got == {"to": "<EMAIL_1>", "first_name": "<PERSON_1>", "password": "<PASSWORD_1>", "count": 3,
                   "city": "San Francisco", "tags": ["call <PHONE_1>"], "func": "get_user_by_id"}
    assert red.response["choices"][0]["message"]["tool_calls"][0]["function"]["name"] == "send_mail"
    assert red.request["messages"][0]["content"] == "Email <EMAIL_1>"
    assert red.meta["scrub"]["values"]["EMAIL"] == 1
    # A copy: the original trace is untouched.
    assert t.request["messages"][0]["content"] == "Email jane@example.com"
    assert red.id == t.id


def test_tool_results_and_content_parts_are_scrubbed(patterns):
    request = {
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "my ip is 10.9.8.7"},
                                          {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]},
            {"role": "tool", "tool_call_id": "c1", "content": '{"owner": "x@y.io", "rows": 2}'},
            {"role": "tool", "tool_call_id": "c2", "content": "not json: x@y.io"},
        ],
        "tools": [{"type": "function", "function": {"name": "f", "description": "mail admin@corp.com"}}],
    }
    out = patterns.scrub_request(request)
    assert out["messages"][0]["content"][0]["text"] == "my ip is <IP_ADDRESS_1>"
    assert out["messages"][0]["content"][1] == request["messages"][0]["content"][1]
    assert json.loads(out["messages"][1]["content"]) == {"owner": "<EMAIL_1>", "rows": 2}
    assert out["messages"][2]["content"] == "not json: <EMAIL_1>"
    assert out["tools"] == request["tools"]  # tool schemas are the developer's, kept verbatim


def test_scrubbing_is_idempotent_on_placeholders(scrubber):
    once = scrubber.scrub_text("Write to Jane Doe at jane@doe.org, pin=1234")
    assert scrubber.scrub_text(once) == once


def test_cache_makes_repeated_strings_cheap():
    s = Scrubber(ner=False)
    system = "You are a helpful assistant for ACME. Escalate to ops@acme.example when unsure. " * 20
    for _ in range(50):
        s.scrub_text(system)
    assert s.stats["cache_hits"] >= 49


def test_cli_scrub_lines_and_jsonl():
    runner = CliRunner()
    res = runner.invoke(cli, ["scrub", "--no-ner"], input="mail a@b.com\n\nweather in Paris\n")
    assert res.exit_code == 0
    assert res.output == "mail <EMAIL_1>\n\nweather in Paris\n"
    line = json.dumps({"q": "ip 10.0.0.1", "n": 5, "nested": {"k": ["card 4111111111111111"]}})
    res = runner.invoke(cli, ["scrub", "--jsonl", "--no-ner"], input=line + "\n")
    assert res.exit_code == 0
    assert json.loads(res.output) == {"q": "ip <IP_ADDRESS_1>", "n": 5, "nested": {"k": ["card <CREDIT_CARD_1>"]}}
    res = runner.invoke(cli, ["scrub", "--surrogates", "--no-ner"], input="mail a@b.com\n")
    assert "@example.com" in res.output and "a@b.com" not in res.output


def test_cli_scrub_bad_jsonl_is_one_line():
    res = CliRunner().invoke(cli, ["scrub", "--jsonl"], input='{"ok": 1}\nnot json\n')
    assert res.exit_code == 2
    assert res.output.strip().splitlines()[-1].startswith("protege: error: line 2: not JSON")
    assert "Traceback" not in res.output


def test_redact_trace_as_capture_hook(tmp_path):
    from protege.capture import CaptureWriter, WriterConfig
    from protege.database import open_store

    store = open_store(f"sqlite:///{tmp_path / 'cap.db'}")
    writer = CaptureWriter(store, WriterConfig(spool_path=tmp_path / "spool.jsonl"), redact=redact_trace)
    t = build_trace({"model": "m", "messages": [{"role": "user", "content": "my key is sk-ant-api03-abcdefghijklmnopqrstuvwx"}]}, None)
    writer.submit(t)
    writer.close()
    got = store.get_trace(t.id)
    store.close()
    assert got.request["messages"][0]["content"] == "my key is <API_KEY_1>"


def test_ner_templates_reuse_confirmed_answers_only():
    from protege.curate.scrub import Scrubber

    firsts = ["Maria Garcia", "John Peters", "Aisha Khan", "Pedro Alvarez", "Greta Calley", "Tomasz Nowak"]
    prompts = [
        f"You are the assistant of the support desk. The current user is {n} and they may ask about orders, "
        f"refunds and deliveries; answer politely and keep every reply short and precise."
        for n in firsts
    ]
    full = Scrubber(template_confirmations=0)
    full.prime(prompts)
    templ = Scrubber(template_confirmations=2)
    templ.prime(prompts[:3])
    templ.prime(prompts[3:])
    assert templ.stats["template_hits"] >= 1
    assert templ.stats["ner_runs"] < full.stats["ner_runs"]
    for p, n in zip(prompts, firsts, strict=True):
        assert n not in templ.scrub_text(p)
        assert templ.scrub_text(p) == full.scrub_text(p)


def test_ner_templates_need_context():
    from protege.curate.scrub import Scrubber

    bare = ["Paris", "Berlin", "Python", "Celsius", "Michael"]
    templ = Scrubber(template_confirmations=2)
    templ.prime(bare[:3])
    templ.prime(bare[3:])
    assert templ.stats["template_hits"] == 0
    full = Scrubber(template_confirmations=0)
    assert [templ.detect(b) for b in bare] == [full.detect(b) for b in bare]
