"""A vectorised HashingFeaturizer: the same ids, computed with numpy over whole byte buffers.

``HashingFeaturizer`` (training/featurizer.py) tokenises and CRC32-hashes one
text at a time in Python: it is the bottleneck of scoring, not the model.
This featuriser gives IDENTICAL (ids, offsets) for the same texts, but works on
the UTF-8 bytes of a whole chunk at once:

    bytes (B,) --lower LUT--> token-char mask --> token starts/ends (T,)
    CRC32 of each token   = XOR over its bytes of G[distance to token end][byte]   (one gather per byte)
    CRC32 of "a b" bigram = M_len(b)(CRC32("a ")) ^ CRC32(b)                       (CRC concatenation)
    char n-grams: tokens wrapped as "<token>" back to back --> stream (S,)
        X_1[i] = T[stream[i]];  X_n[i] = G[n - 1][stream[i]] ^ X_n-1[i + 1]          (one gather per size)
        CRC32("#" + n-gram at i) = CRC32("#" + n zero bytes) ^ X_n[i]               (kept where inside a token)
    ids = crc % num_buckets, laid out per row as [unigrams..., bigrams..., char n-grams by token, start, size],
          or [0] for a row without tokens

CRC32 is linear over GF(2): feeding n zero bytes is a linear map M_n, so
crc(A || B) = M_|B|(crc(A)) ^ crc(B). Tables G, Z, S below hold M_k applied to
single bytes; tokens longer than ``MAX_LEN`` (rare) are hashed with zlib.

Why it matches Python exactly: the token pattern ``[a-z0-9']+`` is ASCII, so a
non-ASCII character only ever separates tokens, except the two whose
``str.lower()`` yields ASCII: U+0130 -> "i" + U+0307 and U+212A (Kelvin) -> "k".
Those two are rewritten before tokenising (tests check this against every code point).

Imports only numpy and torch (an engine module).
"""

from __future__ import annotations

import zlib
from typing import Sequence

import numpy as np
import torch

from mlsys.model.featurizer import CHAR_PREFIX, check_char_ngrams
from mlsys.spec import require

MAX_LEN = 64  # tokens up to this many bytes are hashed with tables; longer ones with zlib
_POLY = np.uint32(0xEDB88320)
_FULL = np.uint32(0xFFFFFFFF)


def _crc_table() -> np.ndarray:
    t = np.arange(256, dtype=np.uint32)
    for _ in range(8):
        t = np.where(t & 1, (t >> 1) ^ _POLY, t >> 1).astype(np.uint32)
    return t


_T = _crc_table()


def _zero_byte(x: np.ndarray) -> np.ndarray:
    """M_1: the CRC register after one more zero byte (linear in x)."""
    return _T[x & 0xFF] ^ (x >> 8)


def _tables(max_len: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    g = np.empty((max_len, 256), dtype=np.uint32)  # g[k, b] = M_k(T[b]): byte b with k bytes after it
    g[0] = _T
    for k in range(1, max_len):
        g[k] = _zero_byte(g[k - 1])
    z = np.empty(max_len + 1, dtype=np.uint32)  # z[n] = ~M_n(~0): the init value's part of an n-byte crc
    reg = np.array([_FULL], dtype=np.uint32)
    for n in range(max_len + 1):
        z[n] = reg[0] ^ _FULL
        reg = _zero_byte(reg)
    s = np.empty((max_len + 1, 4, 256), dtype=np.uint32)  # s[n, k, v] = M_n(v << 8k)
    s[0] = np.arange(256, dtype=np.uint32)[None, :] << (8 * np.arange(4, dtype=np.uint32))[:, None]
    for n in range(1, max_len + 1):
        s[n] = _zero_byte(s[n - 1])
    return g.reshape(-1), z, s.reshape(-1)


_G, _Z, _S = _tables(MAX_LEN)
_CRC_SPACE = np.uint32(zlib.crc32(b" "))

_LOWER = np.arange(256, dtype=np.uint8)
_LOWER[ord("A"):ord("Z") + 1] += 32
_TOKEN_BYTE = np.zeros(256, dtype=bool)
for _c in b"abcdefghijklmnopqrstuvwxyz0123456789'":
    _TOKEN_BYTE[_c] = True


def _char_stream(token_bytes: np.ndarray, tok_len: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every token wrapped as "<token>", back to back: stream (S,) uint8 and each token's end in it (T,)."""
    ends = np.cumsum(tok_len + 2)
    stream = np.empty(int(ends[-1]) if ends.size else 0, dtype=np.uint8)
    inner = np.ones(stream.size, dtype=bool)
    inner[ends - tok_len - 2] = False
    inner[ends - 1] = False
    stream[inner] = token_bytes
    stream[ends - tok_len - 2] = ord("<")
    stream[ends - 1] = ord(">")
    return stream, ends


def _shift(x: np.ndarray, n: np.ndarray) -> np.ndarray:
    """M_n(x) for each pair, n <= MAX_LEN: four byte-table gathers."""
    base = n.astype(np.int64) * 1024
    return (_S[base + (x & 0xFF)] ^ _S[base + 256 + ((x >> 8) & 0xFF)]
            ^ _S[base + 512 + ((x >> 16) & 0xFF)] ^ _S[base + 768 + (x >> 24)])


def _fold_special(data: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Apply the two non-ASCII lower-casings that produce ASCII token characters."""
    lead = np.flatnonzero(data[:-1] == 0xC4)
    dotted = lead[data[lead + 1] == 0xB0]  # U+0130 -> 'i' (+ U+0307, a separator: byte 0xB0 stays one)
    if dotted.size:
        data = data.copy()
        data[dotted] = ord("i")
    lead = np.flatnonzero(data[:-2] == 0xE2)
    kelvin = lead[(data[lead + 1] == 0x84) & (data[lead + 2] == 0xAA)]  # U+212A -> 'k', one character
    if kelvin.size:
        data = data.copy()
        data[kelvin] = ord("k")
        keep = np.ones(data.size, dtype=bool)
        keep[kelvin + 1] = False
        keep[kelvin + 2] = False
        kept_before = np.concatenate([[0], np.cumsum(keep)])
        offsets = kept_before[offsets]
        data = data[keep]
    return data, offsets


class VectorFeaturizer:
    """Same contract as HashingFeaturizer.encode, for a chunk of texts at once."""

    def __init__(self, num_buckets: int = 1 << 15, bigrams: bool = True, char_ngrams: Sequence[int] = ()):
        if num_buckets < 2:
            require(False, "VectorFeaturizer", "num_buckets", num_buckets, "use at least 2 buckets")
        sizes = check_char_ngrams("VectorFeaturizer", char_ngrams)  # the same sizes HashingFeaturizer takes
        self.num_buckets = num_buckets
        self.bigrams = bigrams
        self.char_ngrams = sizes
        # CRC32("#" + n zero bytes): the prefix's and the init value's part of every "#" + n-gram CRC
        self._char_base = {n: np.uint32(zlib.crc32(CHAR_PREFIX.encode() + bytes(n))) for n in sizes}

    @classmethod
    def like(cls, featurizer) -> "VectorFeaturizer":
        """The vectorised twin of a HashingFeaturizer."""
        return cls(featurizer.num_buckets, featurizer.bigrams, featurizer.char_ngrams)

    def encode(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        encoded = [t.encode() for t in texts]
        offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
        np.cumsum([len(b) for b in encoded], out=offsets[1:])
        ids, starts = self.encode_utf8(np.frombuffer(b"".join(encoded), dtype=np.uint8), offsets)
        return torch.from_numpy(ids), torch.from_numpy(starts)

    def encode_utf8(self, data: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """data: (B,) uint8 UTF-8 of all texts; offsets: (N+1,) int64, text i = data[offsets[i]:offsets[i+1]].

        Returns ids (T,) int64 and per-text starts (N,) int64, as HashingFeaturizer.encode.
        """
        n = offsets.size - 1
        data, offsets = _fold_special(data, offsets)
        low = _LOWER[data]
        m = _TOKEN_BYTE[low]
        nonempty = offsets[:-1] < offsets[1:]
        prev = np.zeros_like(m)
        prev[1:] = m[:-1]
        prev[offsets[:-1][nonempty]] = False  # a token never spans two texts
        nxt = np.zeros_like(m)
        nxt[:-1] = m[1:]
        nxt[offsets[1:][nonempty] - 1] = False
        tok_start = np.flatnonzero(m & ~prev)
        tok_len = np.flatnonzero(m & ~nxt) + 1 - tok_start
        tok_row = np.searchsorted(offsets, tok_start, side="right") - 1
        crc = self._token_crcs(low[m], tok_len)

        counts = np.bincount(tok_row, minlength=n)
        first = np.zeros(n, dtype=np.int64)
        np.cumsum(counts[:-1], out=first[1:])
        pair = tok_row[:-1] == tok_row[1:]  # token k and k+1 are neighbours in one text
        per_row = (2 * counts - (counts > 0)) if self.bigrams else counts.copy()
        if self.char_ngrams:
            char_crc, char_per_tok = self._char_grams(low[m], tok_len)
            char_per_row = np.bincount(tok_row, weights=char_per_tok, minlength=n).astype(np.int64)
            words_per_row = per_row.copy()
            per_row += char_per_row
        per_row[counts == 0] = 1  # HashingFeaturizer gives [0] for a text without tokens
        starts = np.zeros(n, dtype=np.int64)
        np.cumsum(per_row[:-1], out=starts[1:])
        ids = np.zeros(int(per_row.sum()), dtype=np.int64)
        within = np.arange(tok_start.size) - first[tok_row]
        ids[starts[tok_row] + within] = self._bucket(crc)
        if self.bigrams and pair.any():
            a = np.flatnonzero(pair)
            b_len = tok_len[a + 1]
            head = _zero_byte(crc[a]) ^ _CRC_SPACE  # crc(a + " ")
            short = b_len <= MAX_LEN
            bi = np.empty(a.size, dtype=np.uint32)
            bi[short] = _shift(head[short], b_len[short]) ^ crc[a + 1][short]
            if not short.all():
                bi[~short] = self._long_bigrams(a[~short], head[~short], low[m], tok_len)
            ids[starts[tok_row[a]] + counts[tok_row[a]] + within[a]] = self._bucket(bi)
        if self.char_ngrams and char_crc.size:
            # a row's n-grams follow its words; they come in row order, so each row's run is contiguous
            char_first = np.zeros(n, dtype=np.int64)
            np.cumsum(char_per_row[:-1], out=char_first[1:])
            to = np.repeat(starts + words_per_row - char_first, char_per_row)
            to += np.arange(char_crc.size)
            ids[to] = self._bucket(char_crc)
        return ids, starts

    def _char_grams(self, token_bytes: np.ndarray, tok_len: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(C,) uint32 CRC32 of "#" + each n-gram, ordered by token, start, size; (T,) n-grams per token."""
        stream, ends = _char_stream(token_bytes, tok_len)
        sizes = self.char_ngrams
        crc = np.zeros((stream.size, len(sizes)), dtype=np.uint32)  # [i, j]: the sizes[j]-gram starting at i
        full = np.ones((stream.size, len(sizes)), dtype=bool)  # it lies inside one "<token>"
        at_byte = stream.astype(np.intp)  # np.take with native indices: the fastest gather numpy has
        x = np.take(_T, at_byte)  # X_1[i]: the CRC register's part from byte i, with no byte after it
        for size in range(1, sizes[-1] + 1):
            if size > 1:  # X_size[i] over stream[i : i + size] = G[size - 1][stream[i]] ^ X_size-1[i + 1]
                x = np.take(_G[(size - 1) * 256 : size * 256], at_byte[: -size + 1]) ^ x[1:]
            if size in self._char_base:
                j = sizes.index(size)
                np.bitwise_xor(x, self._char_base[size], out=crc[: x.size, j])
                for back in range(1, size):  # the last size - 1 starts of each token run past its ">"
                    at = ends - back
                    full[at[at >= 0], j] = False
        per_tok = sum(np.maximum(tok_len + 3 - size, 0) for size in sizes)
        return crc[full], per_tok

    def _bucket(self, crc: np.ndarray) -> np.ndarray:
        """crc % num_buckets; a mask when num_buckets is a power of two (10x faster than the division)."""
        if self.num_buckets & (self.num_buckets - 1) == 0:
            return crc & np.uint32(self.num_buckets - 1)
        return crc % self.num_buckets

    @staticmethod
    def _token_crcs(token_bytes: np.ndarray, tok_len: np.ndarray) -> np.ndarray:
        """(T,) uint32 CRC32 of each token; token_bytes is every token's bytes back to back."""
        if tok_len.size == 0:
            return np.zeros(0, dtype=np.uint32)
        ends = np.cumsum(tok_len)
        begins = ends - tok_len
        # Walk the bytes backwards: a byte's offset within its reversed token is its distance to the token end.
        rev = token_bytes[::-1]
        rev_len = tok_len[::-1]
        rev_begins = np.zeros(rev_len.size, dtype=np.int64)
        np.cumsum(rev_len[:-1], out=rev_begins[1:])
        step = np.ones(rev.size, dtype=np.int32)
        step[0] = 0
        step[rev_begins[1:]] = 1 - rev_len[:-1]
        dist = np.cumsum(step, dtype=np.int32)
        np.minimum(dist, MAX_LEN - 1, out=dist)
        dist <<= 8
        dist += rev
        x = np.bitwise_xor.reduceat(_G[dist], rev_begins)[::-1]
        crc = x ^ _Z[np.minimum(tok_len, MAX_LEN)]
        for k in np.flatnonzero(tok_len > MAX_LEN):
            crc[k] = zlib.crc32(token_bytes[begins[k]:ends[k]].tobytes())
        return crc

    @staticmethod
    def _long_bigrams(a: np.ndarray, head: np.ndarray, token_bytes: np.ndarray, tok_len: np.ndarray) -> np.ndarray:
        ends = np.cumsum(tok_len)
        out = np.empty(a.size, dtype=np.uint32)
        for i, (k, h) in enumerate(zip(a, head)):
            b = token_bytes[ends[k + 1] - tok_len[k + 1]:ends[k + 1]].tobytes()
            out[i] = zlib.crc32(b, int(h))
        return out
