"""The language identifier loaded compactly (sequences/language_model.py) answers as py3langid's
own loader restricted to the same languages: same language, same score, for the mail corpus'
messages and short texts in each of the eight languages."""

from __future__ import annotations

from pathlib import Path

from py3langid.langid import MODEL_FILE, LanguageIdentifier

from sequences.language_model import identifier
from sequences.out_of_office import LANGUAGES

CORPUS = Path(__file__).resolve().parents[1] / "fixtures" / "mail" / "corpus"
TEXTS = [
    "Out of office until Monday, December 7.", "12월 7일까지 부재중입니다.",
    "12月6日まで不在にしております。", "Ich bin bis zum 4. Dezember nicht im Büro.",
    "Je suis absent jusqu'au 8 décembre.", "Estoy fuera de la oficina hasta el lunes.",
    "Estou fora do escritório até segunda-feira.", "我将于12月6日返回办公室。",
    "", "12345", "OK",
]


def test_it_answers_as_py3langids_own_loader():
    reference = LanguageIdentifier.from_model_file(MODEL_FILE)
    reference.set_languages(list(LANGUAGES))
    compact = identifier(LANGUAGES)
    texts = TEXTS + [path.read_bytes()[:2000] for path in sorted(CORPUS.glob("*.eml"))]
    assert len(texts) > len(TEXTS)
    assert [compact.classify(t) for t in texts] == [reference.classify(t) for t in texts]
    assert sorted(compact.nb_classes) == sorted(LANGUAGES)
