"""Our tokenizer (crate pajamas-tokenizer, driven through its `tokenize` example) against
llama.cpp's (llama-cpp-python 0.3.36, `Llama(vocab_only=True).tokenize(text, add_bos=True,
special=False)`): the ids must be identical.

- the demo model (pre-tokenizer gpt-2) and SmolLM2 (smollm): every file of data/corpora,
  whole, plus tricky strings, read from the GGUF we convert and from the HF folder;
- a vocabulary trained here without pre-tokenization, so that its merges cross word
  boundaries: with it every difference in splitting changes the ids, and it is converted
  with each pre-tokenizer we implement (gpt-2, smollm, llama-bpe, qwen2, default);
- a probe vocabulary whose merges reveal whether each codepoint is a letter, number or
  punctuation to the splitter, over every codepoint of planes 0-3 and 14 (llama.cpp's
  own Unicode tables, not Python's or Rust's regex);
- BOS handling (add_bos_token true/absent, llama-bpe's default) and parse_special;
- crates/pajamas-tokenizer/tests/data/llama_cpp_golden.json, the llama.cpp ids that the
  Rust tests check without Python, is llama.cpp's output (PAJAMAS_REGEN_GOLDEN=1 rewrites it).
"""
import json
import os
import shutil
import subprocess
from pathlib import Path

import llama_cpp
import pytest

from conftest import REPO, run

DEMO = REPO / "models" / "demo"
CORPORA = sorted(p for p in (REPO / "data" / "corpora").iterdir() if p.is_file())
GOLDEN = REPO / "crates" / "pajamas-tokenizer" / "tests" / "data" / "llama_cpp_golden.json"
PRES = ["gpt-2", "smollm", "llama-bpe", "qwen2", "default"]
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

TRICKY = [
    "",
    "Hello world",
    "  multiple   spaces  between   words  ",
    "trailing space ",
    " leading space",
    "\n",
    "\n\n\n",
    "a\n\n\nb\n \n  \nc",
    "\r\n\r\nwindows\r\nlines\r",
    "tabs\tand\t\ttabs \t \t\n\t",
    "numbers 1234567 12 3.14159 1,000,000 2024-06-07 0x1F",
    "other digits ٣٤٥ ۱۲۳ ²³ ½ Ⅻ ①②",
    "contractions: don't DON'T I'm you're we've they'll he'd it's 'S 'Ll 'RE 'tis",
    "emoji 🙂👍🏽 👨\u200d👩\u200d👧 family 🇫🇷",
    "CJK: 日本語のテキスト、中文文本。한국어 텍스트 ｆｕｌｌｗｉｄｔｈ",
    "mixed: naïve café — “quotes” «guillemets» … ¿qué? ¡sí!",
    "combining: e\u0301 a\u0308 \u0915\u094d\u0937 \u0e01\u0e34",
    "zero width\u200bspace, nbsp\u00a0here, ideographic\u3000space, nel\u0085end",
    "<|im_start|>user\nhi there<|im_end|>\n<|endoftext|>",
    "code: fn main() { let x = vec![1, 2, 3]; }\n    return x;\n\t// done",
    "    indented\n        more\n",
    "!!!???... $100 + 5 = <tag> ^~| `tick` @at #hash",
    "Unicode 16 letters \U000105c0\U000105c1 and CJK ext I \U0002ebf0\U0002ebf1",
    "control \x00\x01\x1f\x7f chars",
    "a" * 3000,
    " " * 500 + "x",
    "1" * 1000,
    "ab" * 500 + "\n" * 300,
]


# ---------------------------------------------------------------- our side

def tokenize_tool() -> str:
    d = os.environ.get("PAJAMAS_EXAMPLES")
    if not d:
        raise RuntimeError("PAJAMAS_EXAMPLES is not set: run the tests through scripts/test.sh")
    return str(Path(d) / "tokenize")


def ours(model, texts, tmp_path, *flags):
    """Our ids for each text (str or Path) with model (GGUF file or HF folder)."""
    files = []
    for i, t in enumerate(texts):
        if isinstance(t, Path):
            files.append(t)
        else:
            f = tmp_path / f"text-{i}.txt"
            f.write_bytes(t.encode("utf-8"))
            files.append(f)
    p = subprocess.run([tokenize_tool(), str(model), *map(str, files), *flags],
                       capture_output=True, text=True)
    assert "panicked" not in p.stderr, p.stderr
    if p.returncode != 0:
        raise AssertionError(f"tokenize {model} failed ({p.returncode}):\n{p.stderr}")
    lines = p.stdout.splitlines()
    assert len(lines) == len(files)
    return [json.loads(line) for line in lines]


# ---------------------------------------------------------------- llama.cpp's side

_loaded = {}


def llama(gguf):
    if gguf not in _loaded:
        _loaded[gguf] = llama_cpp.Llama(model_path=str(gguf), vocab_only=True, verbose=False)
    return _loaded[gguf]


def theirs(gguf, text, add_bos=True, special=False):
    data = text.read_bytes() if isinstance(text, Path) else text.encode("utf-8")
    return llama(gguf).tokenize(data, add_bos=add_bos, special=special)


def label(text):
    if isinstance(text, Path):
        return text.name
    return repr(text if len(text) < 60 else text[:57] + "...")


def assert_same(got, want, what):
    if got == want:
        return
    i = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
    raise AssertionError(f"{what}: {len(got)} ids vs llama.cpp's {len(want)}; first difference at "
                         f"{i}: ours {got[max(0, i - 3):i + 5]}, llama.cpp {want[max(0, i - 3):i + 5]}")


def check(model, gguf, texts, tmp_path, *flags, add_bos=True, special=False):
    for text, got in zip(texts, ours(model, texts, tmp_path, *flags)):
        assert_same(got, theirs(gguf, text, add_bos, special), f"{Path(model).name}, {label(text)}")


# ---------------------------------------------------------------- models

def convert(folder, out, pre=None):
    args = ["quantize", "llm", "--model", folder, "--gguf-precision", "F16", "--output", out]
    if pre:
        args += ["--pre-tokenizer", pre]
    run(*args)
    path = out / "gguf" / "F16" / f"{Path(folder).name}-F16.gguf"
    assert path.is_file(), path
    return path


def demo_variant(dst, tokenizer=None, tokenizer_config=None):
    """A copy of models/demo (weights linked) with another tokenizer.json and/or
    tokenizer_config.json."""
    dst.mkdir(parents=True)
    for f in DEMO.iterdir():
        if f.name == "model.safetensors":
            (dst / f.name).symlink_to(f)
        elif f.suffix == ".json":
            shutil.copyfile(f, dst / f.name)
    if tokenizer is not None:
        (dst / "tokenizer.json").write_text(json.dumps(tokenizer, ensure_ascii=False))
    if tokenizer_config is not None:
        (dst / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    return dst


def byte_chars():
    """GPT-2's bytes_to_unicode, written out here so the test does not trust our own."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    out, n = {}, 0
    for b in range(256):
        if b in keep:
            out[b] = chr(b)
        else:
            out[b] = chr(256 + n)
            n += 1
    return [out[b] for b in range(256)]


def bpe_json(tokens, merges, added=(), gpt2_regex=False):
    """A minimal byte-level BPE tokenizer.json: the demo's three special tokens first, then
    `tokens`, then the added tokens `added` ((content, special) pairs). The pre-tokenizer is
    byte-level without a regex (pass --pre-tokenizer) or, with gpt2_regex, GPT-2's."""
    vocab = {t: i for i, t in enumerate(SPECIALS)}
    for t in tokens:
        vocab.setdefault(t, len(vocab))
    extra = [(t, True) for t in SPECIALS] + list(added)
    ids = [vocab[t] if t in SPECIALS else len(vocab) + i - len(SPECIALS) for i, (t, _) in enumerate(extra)]
    assert max(ids) < 4096  # the demo model's embedding rows
    return {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [{"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False,
                          "normalized": False, "special": sp} for i, (t, sp) in zip(ids, extra)],
        "normalizer": None,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
                          "use_regex": gpt2_regex},
        "post_processor": None, "decoder": {"type": "ByteLevel"},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": vocab, "merges": [list(m) for m in merges]},
    }


def crossing_tokenizer():
    """4096-token BPE trained on 200-character windows of the corpora with no
    pre-tokenizer: merges such as 'e Ġ', ', Ġ', 'Ċ ĠĠĠĠ' or '1 9' join what the
    pre-tokenizers separate, so any splitting difference shows in the ids."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    texts = []
    for name in ["multilingual.utf8", "code.utf8", "c4.utf8", "technical.utf8"]:
        s = (REPO / "data" / "corpora" / name).read_text()
        texts += [s[i:i + 200] for i in range(0, len(s), 200)]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=4096, special_tokens=SPECIALS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer)
    return json.loads(tok.to_str())


PROBES = "a1!"


def probe_tokenizer():
    """Bytes plus 'pX' for each probe character p and byte character X, with merges
    'p X': in 'a' + c the 'a' merges with c's first byte only if both are in one word,
    which the splitters decide by c's class (letter after 'a', number after '1',
    punctuation after '!' for the default pre-tokenizer)."""
    chars = byte_chars()
    tokens = list(chars) + [p + x for p in PROBES for x in chars]
    merges = [(p, x) for p in PROBES for x in chars]
    return bpe_json(tokens, merges)


def probe_text():
    """(text, codepoints): a line 'p' + c per probe p and codepoint c."""
    cps = [c for c in range(0x110000)
           if (c >> 16 in (0, 1, 2, 3, 14) or c % 97 == 0) and not 0xD800 <= c <= 0xDFFF]
    return "".join(f"{p}{chr(c)}\n" for c in cps for p in PROBES), cps


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("tokenizer-models")


@pytest.fixture(scope="module")
def demo_gguf(models_dir):
    return convert(DEMO, models_dir / "demo")


@pytest.fixture(scope="module")
def smollm2():
    folder = Path(os.environ["SMOLLM2_DIR"])
    return folder


@pytest.fixture(scope="module")
def smollm2_gguf(smollm2, models_dir):
    return convert(smollm2, models_dir / "smollm2")


@pytest.fixture(scope="module")
def crossing(models_dir):
    """pre -> (HF folder, GGUF) of the crossing vocabulary."""
    folder = demo_variant(models_dir / "crossing", tokenizer=crossing_tokenizer())
    return {pre: (folder, convert(folder, models_dir / f"crossing-{pre}", pre)) for pre in PRES}


# ---------------------------------------------------------------- tests

@pytest.mark.parametrize("model", ["demo", "smollm2"])
def test_corpora_match_llama_cpp(model, demo_gguf, smollm2, smollm2_gguf, tmp_path):
    folder, gguf = (DEMO, demo_gguf) if model == "demo" else (smollm2, smollm2_gguf)
    check(gguf, gguf, CORPORA, tmp_path)
    # The HF folder gives the ids of the GGUF converted from it.
    check(folder, gguf, CORPORA, tmp_path)


@pytest.mark.parametrize("model", ["demo", "smollm2"])
def test_tricky_strings_match_llama_cpp(model, demo_gguf, smollm2, smollm2_gguf, tmp_path):
    folder, gguf = (DEMO, demo_gguf) if model == "demo" else (smollm2, smollm2_gguf)
    check(gguf, gguf, TRICKY, tmp_path)
    check(folder, gguf, TRICKY, tmp_path)
    check(gguf, gguf, TRICKY, tmp_path, "--no-special", add_bos=False)


@pytest.mark.parametrize("pre", PRES)
def test_every_pre_tokenizer_with_crossing_merges(pre, crossing, tmp_path):
    folder, gguf = crossing[pre]
    # The splits really differ between pre-tokenizers with this vocabulary.
    if pre != "gpt-2":
        assert theirs(gguf, CORPORA[0]) != theirs(crossing["gpt-2"][1], CORPORA[0])
    check(gguf, gguf, CORPORA + TRICKY, tmp_path)


@pytest.mark.parametrize("pre", ["gpt-2", "default"])
def test_codepoint_classes_are_llama_cpps(pre, models_dir, tmp_path):
    folder = demo_variant(models_dir / f"probe-{pre}", tokenizer=probe_tokenizer())
    gguf = convert(folder, models_dir / f"probe-{pre}-gguf", pre)
    text, cps = probe_text()
    [got] = ours(gguf, [text], tmp_path)
    want = theirs(gguf, text)
    if got != want:
        # Locate the first difference by the newlines before it (about one per line).
        i = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
        [newline] = theirs(gguf, "\n", add_bos=False)
        c = cps[min(want[:i].count(newline) // len(PROBES), len(cps) - 1)]
        raise AssertionError(f"probe {pre}: first difference near U+{c:04X}: ours {got[i:i + 4]}, "
                             f"llama.cpp {want[i:i + 4]}")


def test_bos_and_special_tokens(models_dir, tmp_path):
    cfg = json.loads((DEMO / "tokenizer_config.json").read_text())
    chat = ["<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n", "plain", ""]
    # add_bos_token true: BOS (<|endoftext|>, id 0) first, only with add_special.
    folder = demo_variant(models_dir / "bos", tokenizer_config={**cfg, "add_bos_token": True})
    gguf = convert(folder, models_dir / "bos-gguf")
    assert theirs(gguf, "plain")[0] == 0
    check(gguf, gguf, chat + TRICKY[:5], tmp_path)
    check(folder, gguf, chat, tmp_path)
    check(gguf, gguf, chat, tmp_path, "--no-special", add_bos=False)
    # parse_special: control tokens in the text become tokens.
    assert 1 in theirs(gguf, chat[0], special=True)
    check(gguf, gguf, chat, tmp_path, "--parse-special", special=True)
    # llama-bpe adds BOS when the file does not say (no add_bos_token key).
    no_key = {k: v for k, v in cfg.items() if k != "add_bos_token"}
    folder = demo_variant(models_dir / "llama-bpe-default-bos", tokenizer_config=no_key)
    gguf = convert(folder, models_dir / "llama-bpe-default-bos-gguf", "llama-bpe")
    assert theirs(gguf, "plain")[0] == 0
    check(gguf, gguf, chat, tmp_path)


def test_added_tokens_in_raw_text(models_dir, tmp_path):
    """Added tokens that are not special (user-defined) are matched in the raw text even
    without parse_special, except the texts llama.cpp forces to control ('<end_of_turn>');
    gpt-oss's '<|channel|>' is forced to user-defined although special."""
    chars = byte_chars()
    added = [("<tool>", False), ("<tool_call>", False), ("<end_of_turn>", False), ("<|channel|>", True)]
    tok = bpe_json(chars + ["ab", "abĠ"], [("a", "b"), ("ab", "Ġ")], added, gpt2_regex=True)
    folder = demo_variant(models_dir / "added", tokenizer=tok)
    gguf = convert(folder, models_dir / "added-gguf")
    texts = ["ab <tool>ab <tool_call> x<end_of_turn>y<|channel|>z", "<tool><tool>", "<tool_call>"]
    [first, n_tool, _] = [theirs(gguf, t) for t in texts]
    assert len(n_tool) == 2 and n_tool[0] == n_tool[1]
    check(gguf, gguf, texts, tmp_path)
    check(folder, gguf, texts, tmp_path)
    check(gguf, gguf, texts, tmp_path, "--parse-special", special=True)


def golden_cases():
    texts = TRICKY[:24] + [
        (REPO / "data" / "corpora" / "multilingual.utf8").read_text()[:3000],
        (REPO / "data" / "corpora" / "code.utf8").read_text()[:1500],
    ]
    return [(pre, t) for pre in PRES for t in texts]


def test_rust_golden_file_is_llama_cpps_output(models_dir):
    ggufs = {pre: convert(DEMO, models_dir / f"golden-{pre}", pre) for pre in PRES}
    want = [{"pre": pre, "text": t, "ids": theirs(ggufs[pre], t)} for pre, t in golden_cases()]
    doc = {"about": "llama.cpp's ids (llama-cpp-python 0.3.36, tokenize(add_bos=True, special=False)) "
                    "for models/demo converted with each --pre-tokenizer; written by "
                    "PAJAMAS_REGEN_GOLDEN=1 pytest tests/oracle/test_tokenizer.py",
           "model": "models/demo", "cases": want}
    if os.environ.get("PAJAMAS_REGEN_GOLDEN"):
        GOLDEN.parent.mkdir(parents=True, exist_ok=True)
        cases = ",\n".join(json.dumps(c, ensure_ascii=False, separators=(",", ":")) for c in want)
        head = json.dumps({k: v for k, v in doc.items() if k != "cases"}, ensure_ascii=False)
        GOLDEN.write_text(f'{head[:-1]}, "cases": [\n{cases}\n]}}\n')
    assert json.loads(GOLDEN.read_text())["cases"] == want
